"""`tricorn tune`: run the app under candidate configurations and recommend the one that sustains
the most load within the latency target and the memory limit.

  trial.py    one configuration: start the server, raise the offered load step by step, measure
  search.py   which configurations to try, in what order, within the budget; the recommendation
  report.py   the terminal table and the self-contained HTML report
  command.py  the command line
"""
