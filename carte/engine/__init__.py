"""carte.engine"""
