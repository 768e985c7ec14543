"""Diffusion math that every model and method shares: noise schedules, ODE samplers, seeded generation and
EDM preconditioning. Imports torch only."""
