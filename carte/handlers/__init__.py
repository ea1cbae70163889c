"""carte.handlers"""
