"""seft"""
