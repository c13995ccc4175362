"""The trainer: the learning loop of seed 000 (Algorithm 1), its tasks and report, imitation, evaluation, the
executors that run tasks serially, on a process pool or on Ray, and the rosbag recording, ingestion and replay
that feed it."""
