"""The processes above the workers: the pre-fork supervisor and its scoreboard, and the --reload
parent. None of it imports the request path (tricorn.server)."""
