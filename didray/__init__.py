"""didray: DPO sweeps on Ray, read through the Differential Information Distribution."""
