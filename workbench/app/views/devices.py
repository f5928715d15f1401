"""Devices: the profiles (device_profiles/*.toml), their figures and sources; a malformed profile is
shown with its error, and the others still load."""
from pathlib import Path

import streamlit as st

st.title("Device profiles")
from workbench.api import PROFILE_DIR, load_profiles  # noqa: E402

profiles, errors = load_profiles()
for fname, err in errors.items():
    st.error(err, icon=":material/error:")
st.dataframe([{"name": p.name, "runner": p.runner, "threads": str(p.threads), "runtimes": ", ".join(p.runtimes),
               "delegates": ", ".join(p.delegates), "estimate only": p.estimate_only, "description": p.description}
              for p in profiles.values()], hide_index=True, width="stretch")
st.caption(f"{len(profiles)} profiles from {PROFILE_DIR}; add a device by adding a file (schema: device_profiles/README.md).")
for p in profiles.values():
    with st.expander(f"{p.name}: {p.description}"):
        if p.runner in ("ssh", "adb"):
            if st.button("Test connection", key=f"dev-test-{p.name}", help="one bounded command (15 s) over the "
                         "profile's own connection settings"):
                from workbench.api import reach_device

                with st.spinner(f"Reaching {p.name}..."):
                    st.session_state[f"dev-test-result-{p.name}"] = reach_device(p)
            res = st.session_state.get(f"dev-test-result-{p.name}")
            if res:
                (st.success if res["ok"] else st.error)(f"{'Reachable' if res['ok'] else 'Not reachable'} "
                                                        f"({res['seconds']:.1f} s): {res['message']}")
        if p.compute:
            st.markdown("**Compute figures** (used by the estimate runner)")
            st.json(p.compute)
        if p.sources:
            st.markdown("**Sources**")
            for k, v in p.sources.items():
                st.markdown(f"- {k}: {v}")
        if p.notes:
            st.caption(p.notes)
        st.code(Path(p.path).read_text(), language="toml")
