"""vjapp's networks and checkpoint formats. Imports torch and numpy only (OpenCLIP on demand)."""
