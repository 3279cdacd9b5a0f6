"""
Suites every backend runs: subclass one and provide its ``stores`` fixture.
"""
