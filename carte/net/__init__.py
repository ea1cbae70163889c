"""carte.net"""
