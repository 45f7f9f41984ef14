"""An opt-in regional web ACL: AWS's common and known-bad-inputs rules plus a per-IP rate limit."""

from __future__ import annotations

from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

RATE_LIMIT_PER_5_MIN = 2000


def _visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True
    )


def _managed(
    name: str, priority: int, *, count: tuple[str, ...] = ()
) -> wafv2.CfnWebACL.RuleProperty:
    return wafv2.CfnWebACL.RuleProperty(
        name=name,
        priority=priority,
        override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
        statement=wafv2.CfnWebACL.StatementProperty(
            managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                vendor_name="AWS",
                name=name,
                rule_action_overrides=[
                    wafv2.CfnWebACL.RuleActionOverrideProperty(
                        name=rule, action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={})
                    )
                    for rule in count
                ]
                or None,
            )
        ),
        visibility_config=_visibility(name),
    )


def managed_web_acl(scope: Construct, construct_id: str, *, name: str) -> wafv2.CfnWebACL:
    """A web ACL suited to an image upload API.

    The common rule set blocks request bodies over 8 KB (`SizeRestrictions_BODY`); every photo
    is larger, so that one rule only counts.

    Args:
        scope: the parent construct.
        construct_id: the ACL's id.
        name: its metric name prefix.

    Returns:
        The web ACL; associate it with a stage.
    """
    rate_rule = wafv2.CfnWebACL.RuleProperty(
        name="RateLimitPerIp",
        priority=0,
        action=wafv2.CfnWebACL.RuleActionProperty(block={}),
        statement=wafv2.CfnWebACL.StatementProperty(
            rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                limit=RATE_LIMIT_PER_5_MIN, aggregate_key_type="IP"
            )
        ),
        visibility_config=_visibility("RateLimitPerIp"),
    )
    return wafv2.CfnWebACL(
        scope,
        construct_id,
        scope="REGIONAL",
        default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
        visibility_config=_visibility(name),
        rules=[
            rate_rule,
            _managed("AWSManagedRulesCommonRuleSet", 1, count=("SizeRestrictions_BODY",)),
            _managed("AWSManagedRulesKnownBadInputsRuleSet", 2),
        ],
    )
