"""Page script (run by st.navigation in dashboard/app.py); the page itself is dashboard.results."""

from dashboard import results

results.render()
