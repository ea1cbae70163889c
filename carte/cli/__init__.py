"""carte.cli"""
