"""template.yaml goes through the SAM transform that `sam deploy` runs (samtranslator, as
cfn-lint bundles it). cfn-lint passed templates SAM itself refuses (a DeadLetterConfig with both
Type and Arn), so the transform is checked on its own."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import samtemplate  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_template_yaml_passes_the_sam_transform(monkeypatch):
    transform = pytest.importorskip("samtranslator.translator.transform")
    exceptions = pytest.importorskip("samtranslator.public.exceptions")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    template = samtemplate.load_template(os.path.join(ROOT, "template.yaml"))
    # As after `sam build` + package: code locations are S3 objects.
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://artifacts/{name}.zip"

    class NoManagedPolicies:
        def load(self, *args, **kwargs):
            return {}

    try:
        out = transform.transform(template, {}, NoManagedPolicies())
    except exceptions.InvalidDocumentException as e:
        pytest.fail("; ".join(str(c) for c in e.causes))
    functions = [k for k, v in out["Resources"].items() if v["Type"] == "AWS::Lambda::Function"]
    assert "CrmImportFunction" in functions and "ConnectorsFunction" in functions
    # Every schedule's dead letters go to the queue the template declares, with its policy.
    for name in ("BillingReconcileDLQ", "CrmJobsDLQ", "AnalyticsAggregateDLQ", "ConnectorSyncDLQ"):
        assert out["Resources"][name + "Policy"]["Type"] == "AWS::SQS::QueuePolicy"
