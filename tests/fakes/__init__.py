"""Contract fakes of remote services (only RunPod's API is faked; everything of ours is real)."""
