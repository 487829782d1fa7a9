"""figa"""
