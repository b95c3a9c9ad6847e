#!/usr/bin/env python3
"""Checks a voipwall export offline against the model its real client uses.

  validate_export.py aws|gcp|azure|firewalld FILE

Prints every problem and exits 1, or prints "ok: ..." and exits 0.

  aws        botocore's EC2 service model (Debian python3-botocore), the one
             `aws ec2 authorize-security-group-ingress --cli-input-json`
             validates against: unknown keys, types and ranges.
  gcp        the compute v1 discovery document bundled in the
             google-api-python-client wheel (PyPI): every rule must be a
             Firewall resource (known keys, types, enum values).
  azure      azure-mgmt-network's generated models (PyPI wheel, read with
             ast, not imported): every rule a SecurityRule whose properties
             are SecurityRulePropertiesFormat fields with valid enum values,
             required fields present, read-only ones absent.
  firewalld  firewalld's own zone reader (Debian python3-firewall): every
             zone file in the export loads.

Wheels are fetched once with `pip download --no-deps` into $VOIPWALL_WHEELS
(default target/pydeps).
"""
import ast
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile

WHEELS = {
    "gcp": "google-api-python-client==2.202.0",
    "azure": "azure-mgmt-network==33.1.0",
}


def wheel(kind):
    d = os.environ.get("VOIPWALL_WHEELS", "target/pydeps")
    os.makedirs(d, exist_ok=True)
    name, version = WHEELS[kind].split("==")
    stem = name.replace("-", "_") + "-" + version
    for f in os.listdir(d):
        if f.startswith(stem) and f.endswith(".whl"):
            return zipfile.ZipFile(os.path.join(d, f))
    args = ["download", "-q", "--no-deps", "--dest", d, WHEELS[kind]]
    for pip in ([sys.executable, "-m", "pip"], ["pip3"], ["pip"]):
        try:
            if subprocess.run(pip + args).returncode == 0:
                return wheel(kind)
        except FileNotFoundError:
            continue
    sys.exit(f"cannot download {WHEELS[kind]} (pip)")


def aws(body):
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("ec2")
    shape = model.operation_model("AuthorizeSecurityGroupIngress").input_shape
    report = ParamValidator().validate(body, shape)
    if report.has_errors():
        return [report.generate_report()]
    return []


def gcp(body):
    z = wheel("gcp")
    doc = json.loads(z.read("googleapiclient/discovery_cache/documents/compute.v1.json"))
    schemas = doc["schemas"]
    problems = []

    def check(v, sch, path):
        if "$ref" in sch:
            sch = schemas[sch["$ref"]]
        t = sch.get("type")
        if t == "object":
            if not isinstance(v, dict):
                problems.append(f"{path}: expected an object")
                return
            props = sch.get("properties", {})
            for k, x in v.items():
                if k not in props:
                    problems.append(f"{path}.{k}: unknown field")
                else:
                    check(x, props[k], f"{path}.{k}")
        elif t == "array":
            if not isinstance(v, list):
                problems.append(f"{path}: expected an array")
                return
            for i, x in enumerate(v):
                check(x, sch["items"], f"{path}[{i}]")
        elif t == "string":
            if not isinstance(v, str):
                problems.append(f"{path}: expected a string")
            elif "enum" in sch and v not in sch["enum"]:
                problems.append(f"{path}: {v!r} is not one of {sch['enum']}")
        elif t == "integer":
            if not isinstance(v, int) or isinstance(v, bool):
                problems.append(f"{path}: expected an integer")
        elif t == "boolean":
            if not isinstance(v, bool):
                problems.append(f"{path}: expected a boolean")

    rules = body.get("rules")
    if not isinstance(rules, list) or set(body) != {"rules"}:
        return ["the body must be {\"rules\": [Firewall, ...]}"]
    for i, r in enumerate(rules):
        check(r, {"$ref": "Firewall"}, f"rules[{i}]")
        if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", r.get("name", "")) or len(r["name"]) > 63:
            problems.append(f"rules[{i}].name: {r.get('name')!r} is not a valid resource name")
    return problems


def azure(body):
    z = wheel("azure")
    models = ast.parse(z.read("azure/mgmt/network/models/_models.py"))
    enums = ast.parse(z.read("azure/mgmt/network/models/_enums.py"))
    enum_values = {}
    for c in enums.body:
        if isinstance(c, ast.ClassDef):
            enum_values[c.name] = [
                s.value.value
                for s in c.body
                if isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant)
            ]

    def fields(cls):
        out = {}
        node = next(c for c in models.body if isinstance(c, ast.ClassDef) and c.name == cls)
        for s in node.body:
            if not (isinstance(s, ast.AnnAssign) and isinstance(s.value, ast.Call)):
                continue
            if getattr(s.value.func, "id", "") != "rest_field":
                continue
            attr = s.target.id
            kw = {k.arg: k.value for k in s.value.keywords}
            wire = kw["name"].value if "name" in kw else re.sub(r"_(.)", lambda m: m.group(1).upper(), attr)
            vis = [e.value for e in kw["visibility"].elts] if "visibility" in kw else []
            ann = ast.unparse(s.annotation)
            enum = next((e for e in re.findall(r"_models\.(\w+)", ann) if e in enum_values), None)
            out[wire] = {
                "required": not ann.startswith("Optional"),
                "read_only": vis == ["read"],
                "list": "list[" in ann,
                "int": ann in ("int", "Optional[int]"),
                "enum": enum,
            }
        return out

    rule_fields = {"id", "name", "type", "properties"}
    props = fields("SecurityRulePropertiesFormat")
    problems = []
    rules = body.get("securityRules")
    if not isinstance(rules, list) or set(body) != {"securityRules"}:
        return ["the body must be the NSG's properties: {\"securityRules\": [SecurityRule, ...]}"]
    for i, r in enumerate(rules):
        for k in r:
            if k not in rule_fields:
                problems.append(f"securityRules[{i}].{k}: not a SecurityRule field")
        p = r.get("properties", {})
        for k, v in p.items():
            f = props.get(k)
            path = f"securityRules[{i}].properties.{k}"
            if f is None:
                problems.append(f"{path}: not a SecurityRulePropertiesFormat field")
                continue
            if f["read_only"]:
                problems.append(f"{path}: read-only")
            if f["list"] != isinstance(v, list):
                problems.append(f"{path}: expected {'a list' if f['list'] else 'a scalar'}")
            if f["int"] and not isinstance(v, int):
                problems.append(f"{path}: expected an integer")
            if f["enum"] and v not in enum_values[f["enum"]]:
                problems.append(f"{path}: {v!r} is not one of {enum_values[f['enum']]}")
        for k, f in props.items():
            if f["required"] and k not in p:
                problems.append(f"securityRules[{i}].properties: {k} is required")
        prio = p.get("priority")
        if isinstance(prio, int) and not 100 <= prio <= 4096:
            problems.append(f"securityRules[{i}].properties.priority: {prio} outside 100-4096")
    return problems


def firewalld(text):
    from firewall.core.io.zone import zone_reader

    parts = re.split(r"<!-- file: (vw-[a-z]+\.xml) -->\n", text)
    problems = []
    with tempfile.TemporaryDirectory() as d:
        names = parts[1::2]
        for name, xml in zip(names, parts[2::2]):
            with open(os.path.join(d, name), "w") as f:
                f.write(xml)
            try:
                zone_reader(name, d)
            except Exception as e:  # firewalld raises FirewallError and SAX errors
                problems.append(f"{name}: {e}")
        if not names:
            problems.append("no zone file in the export")
    return problems


def main():
    kind, path = sys.argv[1], sys.argv[2]
    text = open(path).read()
    if kind == "firewalld":
        problems = firewalld(text)
    else:
        body = json.loads(text)
        problems = {"aws": aws, "gcp": gcp, "azure": azure}[kind](body)
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"ok: {kind} export validates against the client model")


if __name__ == "__main__":
    main()
