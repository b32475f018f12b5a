"""Training beyond `fit`: a data-parallel loop (`distributed`) and Ray Train (`ray`)."""
