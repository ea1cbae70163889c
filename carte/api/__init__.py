"""carte.api"""
