"""The Runtime Infrastructure: processors deployed from git and the jobs they run (DESIGN §8)."""
