"""Page script (run by st.navigation in dashboard/app.py); the page itself is dashboard.occupancy."""

from dashboard import occupancy

occupancy.render()
