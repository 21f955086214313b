"""Workloads the tuner loads GPUs with, behind one interface (one backend a module)."""
