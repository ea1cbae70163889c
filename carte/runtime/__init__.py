"""carte.runtime"""
