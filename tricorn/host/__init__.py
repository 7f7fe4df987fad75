"""This machine and this process: listening sockets, CPU and memory limits (cgroups), systemd,
user and group, the garbage collector's settings, the event loop. Imports nothing above it."""
