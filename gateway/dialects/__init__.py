"""Wire dialects at the edge: each translates its API to one upstream chat request and back."""
