"""The leaderboard: records imported from files (`records`, `logparse`), our runs checked and
pooled (`runfolder`, `pooling`, `ourruns`), one `entry.Entry` per submission, the significance
rule, and the rendered tables and plot (`render`).
Never shipped; it reads JSON and logs only and never runs submission code.
"""
