"""Edge Workbench dashboard entry point (``workbench app`` / ``make app``)."""
from pathlib import Path

import streamlit as st

HERE = Path(__file__).parent

# a local icon: a Material icon name makes the browser fetch its SVG from fonts.gstatic.com
st.set_page_config(page_title="Edge Workbench", page_icon=str(HERE / "favicon.png"), layout="wide")

pages = [
    st.Page(HERE / "views" / "models.py", title="Models", icon=":material/view_list:", default=True),
    st.Page(HERE / "views" / "reparam.py", title="Re-parameterize", icon=":material/merge:"),
    st.Page(HERE / "views" / "model_view.py", title="Model view", icon=":material/account_tree:"),
    st.Page(HERE / "views" / "quantize.py", title="INT8 sensitivity", icon=":material/tune:"),
    st.Page(HERE / "views" / "run.py", title="Run", icon=":material/play_arrow:"),
    st.Page(HERE / "views" / "results.py", title="Results", icon=":material/table_chart:"),
    st.Page(HERE / "views" / "history.py", title="History", icon=":material/history:"),
    st.Page(HERE / "views" / "devices.py", title="Devices", icon=":material/devices:"),
]
nav = st.navigation(pages)
st.sidebar.caption("Edge Workbench: export, verify and measure VGG / RepVGG / SSD models for phones and boards.")
sel = st.session_state.get("selected")
if sel:
    st.sidebar.markdown(f"**Selected model:** `{sel['name']}`  \n{sel.get('num_classes')} classes, "
                        f"{sel.get('input_size')} px" + (f"  \nweights: `{Path(sel['weights']).name}`" if sel.get("weights") else ""))
nav.run()
