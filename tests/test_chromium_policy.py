"""deploy/chromium/school-proxy.json, the managed policy that gives a Linux desktop's Chromium
the school's PAC file (docs/operators-guide.md, section 1, step 3).

Chromium ignores a policy key it does not know, and a desktop whose PAC file cannot be
fetched goes direct unless ProxyPacMandatory is set: either mistake would leave pupils
unfiltered without a word. What Chromium then does is walked on Debian 13 in
tests/test_walk.py (opt-in); here, that the file says what the guide says it does.
"""

from __future__ import annotations

import json
import pathlib

from testlab.walk import GUIDE, block, section

ROOT = pathlib.Path(__file__).resolve().parent.parent
POLICY = ROOT / "deploy" / "chromium" / "school-proxy.json"
#: The keys of Chromium's ProxySettings policy (chrome://policy, "ProxySettings").
PROXY_SETTINGS = {
    "ProxyMode",
    "ProxyPacUrl",
    "ProxyPacMandatory",
    "ProxyServer",
    "ProxyServerMode",
    "ProxyBypassList",
}


def test_the_policy_sets_the_pac_file_and_refuses_to_go_direct_without_it() -> None:
    policy = json.loads(POLICY.read_text())
    assert set(policy) == {"ProxySettings"}
    settings = policy["ProxySettings"]
    assert set(settings) <= PROXY_SETTINGS
    assert settings["ProxyMode"] == "pac_script"
    assert settings["ProxyPacMandatory"] is True
    assert settings["ProxyPacUrl"].startswith("http://")
    assert settings["ProxyPacUrl"].endswith("/proxy.pac")


def test_the_guide_installs_this_file_where_chromium_reads_managed_policies() -> None:
    school = section(GUIDE.read_text(), "## 1. A school")
    desktop = block(school, "sh", "/etc/chromium/policies/managed")
    assert f"cp deploy/chromium/{POLICY.name} /etc/chromium/policies/managed/" in desktop
    assert "ProxyPacMandatory" in school
