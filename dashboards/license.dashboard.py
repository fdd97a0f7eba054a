"""The License dashboard: is the system licensed, how long the grace period has left, and
what each site's dongle says (docs/licensing.md; the metrics: docs/metrics.md, Licensing).

Every license metric comes from the leading controller replica (``component="controller"``).
The system-level ones carry the leader's site, which changes with the leader, so their
queries aggregate the site away; the per-dongle ones carry the dongle's site and follow
``$site``.
"""

from __future__ import annotations

from panels import (
    GREEN,
    GREY,
    ORANGE,
    RED,
    bfm_dashboard,
    layout,
    prom,
    prometheus_datasource,
    row,
    section,
    site_variable,
    stat,
    state_timeline,
    steps,
    table,
    value_mappings,
)

LEADER = 'component="controller"'
DAY_S = 86400

# The system's state as one number, 0 licensed, 1 grace, 2 unlicensed: the state series
# whose value is 1, worst first, so two replicas briefly reporting during a leader change
# show the worse of their two answers.
STATE_CODE = (
    f'2 * max(bfm_license_state{{{LEADER}, state="unlicensed"}} == 1)\n'
    f'or 1 * max(bfm_license_state{{{LEADER}, state="grace"}} == 1)\n'
    f'or 0 * max(bfm_license_state{{{LEADER}, state="licensed"}} == 1)'
)
STATE_MAPPINGS = value_mappings(
    (0, "licensed", GREEN), (1, "grace", ORANGE), (2, "unlicensed", RED)
)
# min: were two replicas reporting at once, never show more time than there is.
GRACE_LEFT = f"min without (site, instance, job) (bfm_license_grace_remaining_seconds{{{LEADER}}})"
VALID_DONGLES = f"sum(max by (site) (bfm_license_dongle_valid{{{LEADER}}}))"
DONGLE_VALID = f'max by (site) (bfm_license_dongle_valid{{{LEADER}, site=~"$site"}})'
DONGLE_STATUS = f'max by (site, status) (bfm_license_dongle_status{{{LEADER}, site=~"$site"}}) == 1'
DAYS_TO_EXPIRY = (
    "(max by (site) "
    f'(bfm_license_dongle_expiry_timestamp_seconds{{{LEADER}, site=~"$site"}}) - time())'
    f" / {DAY_S}"
)
STATUS_MAPPINGS = value_mappings(
    ("valid", "valid", GREEN),
    ("missing", "missing", RED),
    ("expired", "expired", RED),
    ("tampered", "tampered", RED),
    ("foreign", "foreign", RED),
    ("malformed", "malformed", RED),
)

state = stat(
    "License state",
    description=(
        "The system's license state as the leading controller decides it: licensed while a "
        "live site presents a valid dongle, grace when none does (everything still works), "
        "unlicensed once the grace period has run out (updates and configuration changes are "
        "refused; alarms always flow). Not filtered by site. Grace or unlicensed: see the "
        "dongle panels below and docs/licensing.md."
    ),
    targets=[prom(STATE_CODE, "state")],
    mappings=STATE_MAPPINGS,
    thresholds=steps(GREY),
    text_mode="value",
    no_value="no leader reporting",
)

grace_left = stat(
    "Grace remaining",
    description=(
        "How much of the grace period is left: the whole period while licensed, the time "
        "until the system becomes unlicensed while in grace, 0 once unlicensed. Red under a "
        "day, orange under two: install a valid license file at a live site before it runs "
        "out. From the leading controller; not filtered by site."
    ),
    targets=[prom(GRACE_LEFT, "grace remaining")],
    unit="dtdurations",
    decimals=2,  # for a duration: two units, "2 days, 23 hours"
    thresholds=steps(RED, (DAY_S, ORANGE), (2 * DAY_S, GREEN)),
    text_mode="value",
)

valid_dongles = stat(
    "Sites with a valid dongle",
    description=(
        "How many live sites present a valid dongle for this system (a dead site's dongle "
        "does not count). The system is licensed while this is at least 1; orange at 1 "
        "means one more site failure or expiry starts the grace period. Not filtered by site."
    ),
    targets=[prom(VALID_DONGLES, "valid dongles")],
    thresholds=steps(RED, (1, ORANGE), (2, GREEN)),
    text_mode="value",
)

state_over_time = state_timeline(
    "License state over time",
    description=(
        "The system's license state over the chosen time range (green licensed, orange "
        "grace, red unlicensed), to see when grace started and how long it lasted. Gaps: "
        "no leading controller exported the state."
    ),
    targets=[prom(STATE_CODE, "system")],
    mappings=STATE_MAPPINGS,
)

dongles = section(
    "Dongles per site",
    description="Each site's dongle as the leading controller judges it; follows $site.",
)

days_to_expiry = stat(
    "Days to expiry",
    description=(
        "Days until each site's dongle expires, for dongles whose signature verified "
        "(negative: expired that many days ago). Red under 7 days, orange under 30: renew "
        "the license file before then. A site without a number has no verified dongle: see "
        "Dongle status."
    ),
    targets=[prom(DAYS_TO_EXPIRY, "{{site}}")],
    unit="suffix: days",
    decimals=1,
    thresholds=steps(RED, (7, ORANGE), (30, GREEN)),
    text_mode="value_and_name",
    no_value="no verified dongle",
)

dongle_status = table(
    "Dongle status",
    description=(
        "What each site's dongle is now: valid, missing (no readable license file, or the "
        "site reported nothing), expired, tampered (the signature does not verify), foreign "
        "(another system's or another site's) or malformed. The fix for each: "
        "docs/licensing.md."
    ),
    targets=[prom(DONGLE_STATUS, table=True)],
    column_mappings={"status": STATUS_MAPPINGS},
)

dongle_validity = state_timeline(
    "Dongle validity per site",
    description=(
        "Per site, over time: green while the site presents a valid dongle for this "
        "system, red while it does not (missing, expired, tampered, foreign, malformed, or "
        "the site is down). The system stays licensed while any one band is green."
    ),
    targets=[prom(DONGLE_VALID, "{{site}}")],
    mappings=value_mappings((1, "valid", GREEN), (0, "not valid", RED)),
)

dashboard = bfm_dashboard(
    name="license",
    title="License",
    description=(
        "The system's license: state, grace remaining, and each site's dongle (docs/licensing.md)."
    ),
    tags=["license"],
    variables=[prometheus_datasource(), site_variable(f"bfm_license_dongle_valid{{{LEADER}}}")],
    panels=layout(
        row(5, (state, 8), (grace_left, 8), (valid_dongles, 8)),
        row(5, (state_over_time, 24)),
        dongles,
        row(8, (days_to_expiry, 12), (dongle_status, 12)),
        row(7, (dongle_validity, 24)),
    ),
)
