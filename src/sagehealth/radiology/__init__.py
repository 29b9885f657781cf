"""The radiology reporting workflow (issue 17): findings read from report text, and (to come)
the worklist, drafts, sign-off and the feedback loop built on them."""
