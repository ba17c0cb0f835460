"""creps.calib"""
