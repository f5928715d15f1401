"""The Streamlit dashboard: a shell over the library (``streamlit run workbench/app/main.py`` or
``workbench app``). Each page is a file in ``views/``; heavy imports happen inside the pages."""
