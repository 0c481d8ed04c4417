"""Page script (run by st.navigation in dashboard/app.py); the page itself is dashboard.explorer."""

from dashboard import explorer

explorer.render()
