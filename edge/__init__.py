"""The bin-side runner: camera or folder -> classify with `wastesort` -> actuate -> buffer
telemetry -> pull model updates. Never imports TensorFlow; see docs/edge.md."""
