"""The hermes-lab dashboard: a Streamlit app over ``analysis/`` and ``hermes_policy/``.

Launch it with ``hermes-lab dashboard`` (see :mod:`dashboard.cli`). Layout:

* :mod:`dashboard.settings`: what the command line passed (studies, model, video, runs folder);
* :mod:`dashboard.data`: every model, recording, array and figure the pages show,
  behind ``st.cache_resource`` (models) and ``st.cache_data`` (the rest);
* :mod:`dashboard.plots`: plotly figures in the paper's colours (:mod:`analysis.style`);
* :mod:`dashboard.ui`: error guard and the widgets pages share;
* :mod:`dashboard.explorer`, :mod:`dashboard.study`, :mod:`dashboard.occupancy`,
  :mod:`dashboard.live`: one module per page, each with ``render()``;
  ``dashboard/views/*.py`` are the page scripts that call them;
* :mod:`dashboard.app`: the entry script (sidebar + navigation).

Pages never compute: numbers come from ``analysis`` and ``hermes_policy`` functions.
"""
