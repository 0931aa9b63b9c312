"""Applications built on the subsystems: experiments (demo, reproduction), their report, and their commands."""
