"""carte.image"""
