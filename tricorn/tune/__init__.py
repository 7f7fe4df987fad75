"""`tricorn tune`: run the app under candidate configurations and recommend the one that sustains
the most load within the latency target and the memory limit.

  model.py           a Trial and its Steps: what is measured and reported
  trial.py           one configuration: start the server, raise the offered load step by step, measure
  server_process.py  the server under test: its command (tricorn or --cmd) and its process
  engines.py         where the load comes from: tricorn bench's engine (locust.py: a Locust cluster)
  procfs.py          CPU time from /proc
  search.py          which configurations to try, in what order, within the budget; the recommendation
  report.py          the terminal table and the self-contained HTML report
  command.py         the command line
"""
