"""Operators: pure array functions on one block (NumPy or CuPy in, same out)."""
