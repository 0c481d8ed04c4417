"""Page script (run by st.navigation in dashboard/app.py); the page itself is dashboard.live."""

from dashboard import live

live.render()
