"""creps.export"""
