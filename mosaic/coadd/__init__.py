"""Graph builders for coaddition: drizzle (iteration 0), UPDC and baselines."""
