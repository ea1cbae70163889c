"""carte.plugins"""
