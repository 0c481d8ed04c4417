"""Page script (run by st.navigation in dashboard/app.py); the page itself is dashboard.study."""

from dashboard import study

study.render()
