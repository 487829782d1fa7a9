"""spin"""
