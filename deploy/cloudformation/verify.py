#!/usr/bin/env python3
"""Deploys Egret's CloudFormation templates against moto, a local AWS emulator, and checks them.

Run with the Python of the virtual environment that holds moto[server] and cfn-lint (test.sh
makes it in target/moto-venv):

    target/moto-venv/bin/python deploy/cloudformation/verify.py

It starts its own moto_server on a free 127.0.0.1 port (stopped at exit), with dummy
credentials, and for each scenario below creates the stack, waits for CREATE_COMPLETE, checks
the outputs and every resource it can read back, updates WhitelistedDomains and sees the SSM
parameter follow, then deletes the stack. It exits 1 with every failed check listed, and
gives up after TIME_LIMIT seconds.

What moto 5.1.22 cannot do, and what this script does about it:

- Resource types its CloudFormation does not know, which it skips silently (a reference to
  one renders as garbage): AWS::Logs::MetricFilter, AWS::CloudWatch::Alarm,
  AWS::EC2::VPCEndpointService and AWS::EC2::VPCEndpointServicePermissions. The script takes
  them (and the outputs that name them) out of the template it deploys, then creates each one
  through its service's API from the template's own properties, resolved against the deployed
  stack, and checks what the service holds (the metric filter also against sample log lines).
  The list is computed from moto itself and must match UNSUPPORTED, so that this comment and
  the README stay true.
- Properties its CloudFormation ignores: the load balancer's Type (it makes an application
  load balancer, which refuses the TCP listener); LoadBalancerAttributes,
  TargetGroupAttributes and ListenerAttributes; a network interface's GroupSet,
  SourceDestCheck and Tags. The moto_server started here is patched to pass Type on; the
  others are applied through the EC2 and ELB APIs from the template, then read back and
  checked. UpdatePolicy is not emulated at all.
- Deletion: its CloudFormation deletes neither routes nor route tables, so no VPC stack can be
  deleted; the moto_server started here is patched to delete them.
- Parameters: moto resolves an AWS::SSM::Parameter::Value default even when a value is given,
  and the public /aws/service/... paths are neither in it nor writable, so the deployed copy's
  ImageId default names a parameter this script creates; it splits a CommaDelimitedList value
  that is given but not a default, so every list parameter is passed; and it compares Number
  parameters as numbers in Fn::Equals (CloudFormation compares strings: "0" is "0"), so the
  deployed copy declares those String.
- It keeps an inline IAM policy written by CloudFormation as Python's repr of it; the script
  reads that back. An AWS::NoValue inside a list (a security group's rules, a policy's
  statements) crashes it, so the templates make those conditional parts resources of their
  own (AWS::EC2::SecurityGroupIngress, AWS::IAM::Policy).
- Rules are not evaluated by moto: the script evaluates them itself for each scenario, and
  checks that the combinations they forbid are refused.
- Nothing runs on the instances: the user data moto renders is checked instead (bash -n, the
  egret.toml it writes parsed and compared with the stack, the egret-setup arguments).
"""

import ast
import base64
import copy
import ctypes
import difflib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REGION = "us-east-1"
TIME_LIMIT = 170
UNSUPPORTED = {
    "AWS::CloudWatch::Alarm",
    "AWS::EC2::VPCEndpointService",
    "AWS::EC2::VPCEndpointServicePermissions",
    "AWS::Logs::MetricFilter",
}
AMI_PARAMETER = "/egret-verify/ami"
PACKAGE_URL = "https://packages.example.invalid/egret_0.1.0_amd64.deb"
UPDATED_DOMAINS = "pypi.org,.pythonhosted.org,deb.debian.org"
# Access-log lines as Egret writes them (README): one allowed, two denied.
SAMPLE_LINES = [
    "1795626536.755    139 10.0.16.7 TCP_TUNNEL/200 67920 CONNECT pypi.org:443 - "
    "HIER_DIRECT/203.0.113.80 -",
    "1795626536.769      0 10.0.16.7 TCP_DENIED/403 179 GET http://example.com/ - HIER_NONE/- "
    "text/html",
    "1795626536.782      0 10.0.16.7 TCP_DENIED/403 179 CONNECT example.com:443 - HIER_NONE/- "
    "text/html",
]


def scenarios(network):
    """Returns the stacks to deploy: (name, template, parameters), `network` being the VPC
    that verify.py made for the existing-VPC template."""
    existing = {
        "VpcId": network["vpc"],
        "VpcCidr": network["cidr"],
        "PublicSubnetA": network["public"][0],
        "PublicSubnetB": network["public"][1],
        "PrivateSubnetA": network["private"][0],
        "PrivateSubnetB": network["private"][1],
    }
    return [
        ("new-vpc-both-alarm", "new-vpc.yaml", {
            "Mode": "both",
            "WhitelistedDomains": ".amazonaws.com,pypi.org",
            "DeniedAlarmThreshold": "25",
            "AlarmEmail": "egret-alerts@example.com",
            "KeyName": "egret-verify",
            "InstanceType": "t3.micro",
        }),
        ("new-vpc-explicit-privatelink", "new-vpc.yaml", {
            "EnablePrivateLink": "true",
            "AllowedPrincipals": "arn:aws:iam::111122223333:root,arn:aws:iam::444455556666:root",
        }),
        ("existing-vpc-transparent", "existing-vpc.yaml", {
            **existing,
            "Mode": "transparent",
            "PrivateRouteTableA": network["private_route_tables"][0],
            "PrivateRouteTableB": network["private_route_tables"][1],
            "LogRetentionDays": "30",
            "DeniedAlarmThreshold": "10",
        }),
        ("existing-vpc-explicit-privatelink", "existing-vpc.yaml", {
            **existing,
            "EnablePrivateLink": "true",
            "WhitelistedDomains": "pypi.org",
        }),
    ]


# Parameter combinations the templates' Rules must refuse.
FORBIDDEN = [
    ("new-vpc.yaml", {"Mode": "both", "EnablePrivateLink": "true"}),
    ("existing-vpc.yaml", {"Mode": "transparent", "PrivateRouteTableA": "rtb-0a",
                           "PrivateRouteTableB": ""}),
]


class Failed(Exception):
    """A check whose failure makes the following ones meaningless."""


class Checks:
    """Counts checks; records failures and goes on, except for `need`."""

    def __init__(self):
        self.passed = 0
        self.failures = []
        self.scope = ""

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failures.append(f"{self.scope}: {what}")
        return ok

    def equal(self, got, want, what):
        return self.check(got == want, f"{what}: got {got!r}, want {want!r}")

    def need(self, ok, what):
        if not self.check(ok, what):
            raise Failed(what)


# ---- Templates -------------------------------------------------------------------------------


def load_template(name):
    """Returns the template as plain JSON-able Python, short forms (!Ref) expanded."""
    from cfnlint.decode import cfn_yaml

    return json.loads(json.dumps(cfn_yaml.load(str(HERE / name))))


def references(node):
    """Returns the logical names `node` refers to (Ref, Fn::GetAtt, Fn::Sub)."""
    found = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                target = value.split(".")[0] if isinstance(value, str) else value[0]
                found.add(target)
            elif key == "Fn::Sub":
                text, names = (value, {}) if isinstance(value, str) else value
                found |= {v.split(".")[0] for v in re.findall(r"\$\{([^!}][^}]*)\}", text)}
                found -= set(names)
                found |= references(names)
            else:
                found |= references(value)
    elif isinstance(node, list):
        for item in node:
            found |= references(item)
    return found


def moto_variant(template, supported):
    """Returns (what moto deploys, the resources taken out, the outputs taken out)."""
    variant = copy.deepcopy(template)
    resources = variant["Resources"]
    removed = {k: v for k, v in resources.items() if v["Type"] not in supported}
    changed = True
    while changed:
        changed = False
        for name, resource in list(resources.items()):
            depends = resource.get("DependsOn", [])
            depends = [depends] if isinstance(depends, str) else depends
            if name not in removed and (references(resource) | set(depends)) & set(removed):
                removed[name] = resource
                changed = True
    for name in removed:
        del resources[name]
    dropped = {k: v for k, v in variant.get("Outputs", {}).items()
               if references(v) & set(removed)}
    for name in dropped:
        del variant["Outputs"][name]
    variant["Parameters"]["ImageId"]["Default"] = AMI_PARAMETER
    compared = references(variant.get("Conditions", {}))
    for name, parameter in variant["Parameters"].items():
        if parameter["Type"] == "Number" and name in compared:
            parameter["Type"] = "String"
            parameter.pop("MinValue", None)
            if "Default" in parameter:
                parameter["Default"] = str(parameter["Default"])
            if "AllowedValues" in parameter:
                parameter["AllowedValues"] = [str(v) for v in parameter["AllowedValues"]]
    return variant, removed, dropped


NO_VALUE = object()


class Resolver:
    """Evaluates conditions and intrinsic functions as CloudFormation does (strings compared
    as strings), for the resources and outputs moto could not deploy."""

    def __init__(self, template, parameters, stack_name, physical=None):
        self.template = template
        self.values = {}
        for name, spec in template.get("Parameters", {}).items():
            value = parameters.get(name, spec.get("Default"))
            value = "" if value is None else str(value)
            if spec["Type"] == "CommaDelimitedList":
                value = value.split(",")
            self.values[name] = value
        self.values.update({
            "AWS::StackName": stack_name,
            "AWS::Region": REGION,
            "AWS::AccountId": "123456789012",
            "AWS::Partition": "aws",
            "AWS::NoValue": NO_VALUE,
        })
        self.physical = physical or {}

    def condition(self, name):
        return self.truth(self.template["Conditions"][name])

    def truth(self, node):
        (function, args), = node.items()
        if function == "Condition":
            return self.condition(args)
        if function == "Fn::Equals":
            left, right = (self.value(a) for a in args)
            return str(left) == str(right)
        if function == "Fn::Not":
            return not self.truth(args[0])
        if function == "Fn::And":
            return all(self.truth(a) for a in args)
        if function == "Fn::Or":
            return any(self.truth(a) for a in args)
        raise ValueError(f"condition function {function}")

    def rules_broken(self):
        """Returns the AssertDescription of every Rules assertion that fails."""
        broken = []
        for rule in self.template.get("Rules", {}).values():
            if "RuleCondition" in rule and not self.truth(rule["RuleCondition"]):
                continue
            broken += [a["AssertDescription"] for a in rule["Assertions"]
                       if not self.truth(a["Assert"])]
        return broken

    def value(self, node):
        if isinstance(node, list):
            return [v for v in (self.value(n) for n in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, args), = node.items()
            if key == "Ref":
                if args in self.values:
                    return self.values[args]
                return self.physical[args]
            if key == "Fn::If":
                return self.value(args[1] if self.condition(args[0]) else args[2])
            if key == "Fn::Join":
                return args[0].join(str(v) for v in self.value(args[1]))
            if key == "Fn::Select":
                return self.value(args[1])[int(args[0])]
            if key == "Fn::Sub":
                text, names = (args, {}) if isinstance(args, str) else args
                names = {k: self.value(v) for k, v in names.items()}

                def substitute(match):
                    name = match.group(1)
                    if name.startswith("!"):
                        return "${" + name[1:] + "}"
                    if name in names:
                        return str(names[name])
                    return str(self.value({"Ref": name}))

                return re.sub(r"\$\{([^}]+)\}", substitute, text)
            if key.startswith("Fn::"):
                raise ValueError(f"intrinsic function {key}")
        result = {}
        for key, value in node.items():
            value = self.value(value)
            if value is not NO_VALUE:
                result[key] = value
        return result


# ---- moto ----------------------------------------------------------------------------------


def serve_moto(port):
    """Runs moto_server in this process, with gaps of its CloudFormation filled: the load
    balancer's Type is passed on, and routes and route tables are deleted with their stack."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.route_tables import Route, RouteTable
    from moto.elbv2 import models as elbv2
    from moto.server import main

    try:  # PR_SET_PDEATHSIG: end with verify.py, even when it is killed
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass

    def delete_route_table(cls, resource_name, cloudformation_json, account_id, region_name):
        backend = ec2_backends[account_id][region_name]
        # The subnet associations are the stack's too; moto does not delete them either.
        backend.route_tables[resource_name].associations.clear()
        backend.delete_route_table(resource_name)

    def delete_route(cls, resource_name, cloudformation_json, account_id, region_name):
        backend = ec2_backends[account_id][region_name]
        table, destination = resource_name.split("~", 1)
        if table in backend.route_tables:  # else it went with its table
            backend.delete_route(table, destination)

    RouteTable.delete_from_cloudformation_json = classmethod(delete_route_table)
    Route.delete_from_cloudformation_json = classmethod(delete_route)

    def create_load_balancer(cls, resource_name, cloudformation_json, account_id, region_name,
                             **kwargs):
        properties = cloudformation_json["Properties"]
        return elbv2.elbv2_backends[account_id][region_name].create_load_balancer(
            resource_name,
            properties.get("SecurityGroups"),
            properties.get("Subnets"),
            scheme=properties.get("Scheme", "internet-facing"),
            loadbalancer_type=properties.get("Type", "application"),
        )

    elbv2.FakeLoadBalancer.create_from_cloudformation_json = classmethod(create_load_balancer)
    main(["-H", "127.0.0.1", "-p", str(port)])


def start_moto(log):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve-moto", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return server, endpoint
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise Failed(f"moto_server did not start (exit {server.poll()})")
            time.sleep(0.2)


def stop(server):
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


class Aws:
    def __init__(self, endpoint):
        import boto3

        session = boto3.session.Session(region_name=REGION)
        for name in ["autoscaling", "cloudformation", "cloudwatch", "ec2", "elbv2", "iam",
                     "logs", "sns", "ssm"]:
            setattr(self, name, session.client(name, endpoint_url=endpoint))


def make_network(aws):
    """Creates what existing-vpc.yaml expects: a VPC with an internet gateway, a public and a
    private subnet in each of two zones, and a route table per private subnet."""
    ec2 = aws.ec2
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]][:2]
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    public_table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=public_table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    network = {"vpc": vpc, "cidr": "10.40.0.0/16", "zones": zones, "public": [],
               "private": [], "private_route_tables": []}
    for i, zone in enumerate(zones):
        public = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.40.{i}.0/24",
                                   AvailabilityZone=zone)["Subnet"]["SubnetId"]
        ec2.associate_route_table(RouteTableId=public_table, SubnetId=public)
        private = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.40.{16 * (i + 1)}.0/20",
                                    AvailabilityZone=zone)["Subnet"]["SubnetId"]
        table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        ec2.associate_route_table(RouteTableId=table, SubnetId=private)
        network["public"].append(public)
        network["private"].append(private)
        network["private_route_tables"].append(table)
    return network


def wait_stack(aws, stack_id, done):
    deadline = time.monotonic() + 60
    while True:
        stack = aws.cloudformation.describe_stacks(StackName=stack_id)["Stacks"][0]
        status = stack["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            if status != done:
                events = aws.cloudformation.describe_stack_events(StackName=stack_id)
                reasons = [f"{e.get('LogicalResourceId')}: {e.get('ResourceStatusReason')}"
                           for e in events["StackEvents"] if e.get("ResourceStatusReason")]
                raise Failed(f"stack is {status}, not {done}: {stack.get('StackStatusReason')}"
                             f" {reasons[:5]}")
            return stack
        if time.monotonic() > deadline:
            raise Failed(f"stack still {status} after 60 s")
        time.sleep(0.2)


# ---- What moto could not create --------------------------------------------------------------


def create_unsupported(aws, stack_name, logical, resource, resolver):
    """Creates `resource` through its service's API; returns its physical id."""
    properties = resolver.value(resource.get("Properties", {}))
    kind = resource["Type"]
    if kind == "AWS::Logs::MetricFilter":
        aws.logs.put_metric_filter(
            logGroupName=properties["LogGroupName"],
            filterName=f"{stack_name}-{logical}",
            filterPattern=properties["FilterPattern"],
            metricTransformations=[{
                "metricName": t["MetricName"],
                "metricNamespace": t["MetricNamespace"],
                "metricValue": t["MetricValue"],
                "defaultValue": float(t["DefaultValue"]),
            } for t in properties["MetricTransformations"]])
        return f"{stack_name}-{logical}"
    if kind == "AWS::CloudWatch::Alarm":
        name = f"{stack_name}-{logical}"
        aws.cloudwatch.put_metric_alarm(
            AlarmName=name,
            AlarmDescription=properties["AlarmDescription"],
            Namespace=properties["Namespace"],
            MetricName=properties["MetricName"],
            Statistic=properties["Statistic"],
            Period=int(properties["Period"]),
            EvaluationPeriods=int(properties["EvaluationPeriods"]),
            Threshold=float(properties["Threshold"]),
            ComparisonOperator=properties["ComparisonOperator"],
            TreatMissingData=properties["TreatMissingData"],
            AlarmActions=properties["AlarmActions"])
        return name
    if kind == "AWS::EC2::VPCEndpointService":
        service = aws.ec2.create_vpc_endpoint_service_configuration(
            NetworkLoadBalancerArns=properties["NetworkLoadBalancerArns"],
            AcceptanceRequired=properties["AcceptanceRequired"])
        return service["ServiceConfiguration"]["ServiceId"]
    if kind == "AWS::EC2::VPCEndpointServicePermissions":
        aws.ec2.modify_vpc_endpoint_service_permissions(
            ServiceId=properties["ServiceId"],
            AddAllowedPrincipals=properties["AllowedPrincipals"])
        return properties["ServiceId"]
    raise Failed(f"no stand-in for {kind}")


def apply_ignored_properties(aws, template, resolver):
    """Applies the properties moto's CloudFormation ignores, as CloudFormation would: the ELB
    attributes, and a network interface's security groups, source/destination check and
    tags."""
    for logical, resource in template["Resources"].items():
        if resource["Type"] != "AWS::EC2::NetworkInterface" or logical not in resolver.physical:
            continue
        properties = resolver.value(resource["Properties"])
        eni = resolver.physical[logical]
        aws.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni,
                                                   Groups=properties["GroupSet"])
        aws.ec2.modify_network_interface_attribute(
            NetworkInterfaceId=eni, SourceDestCheck={"Value": properties["SourceDestCheck"]})
        aws.ec2.create_tags(Resources=[eni], Tags=properties["Tags"])
    calls = {
        "AWS::ElasticLoadBalancingV2::LoadBalancer": (
            aws.elbv2.modify_load_balancer_attributes, "LoadBalancerArn",
            "LoadBalancerAttributes"),
        "AWS::ElasticLoadBalancingV2::TargetGroup": (
            aws.elbv2.modify_target_group_attributes, "TargetGroupArn", "TargetGroupAttributes"),
        "AWS::ElasticLoadBalancingV2::Listener": (
            aws.elbv2.modify_listener_attributes, "ListenerArn", "ListenerAttributes"),
    }
    for logical, resource in template["Resources"].items():
        if resource["Type"] not in calls:
            continue
        call, arn, attributes = calls[resource["Type"]]
        properties = resolver.value(resource.get("Properties", {}))
        call(**{arn: resolver.physical[logical], "Attributes": properties.get(attributes, [])})


# ---- Checks --------------------------------------------------------------------------------


def duration(text):
    match = re.fullmatch(r"(\d+)s", text)
    if not match:
        raise Failed(f"duration {text!r} is not in seconds")
    return int(match.group(1))


def check_user_data(c, text, ctx):
    """Checks the boot script: its syntax, the egret.toml it writes, the egret-setup call."""
    c.check(text.startswith("#!/bin/bash\n"), "user data is a bash script")
    syntax = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    c.check(syntax.returncode == 0, f"user data passes bash -n: {syntax.stderr.strip()}")
    leftovers = set(re.findall(r"\$\{[^}]*\}", text)) - {"${setup[@]}", "${packages[@]}"}
    c.equal(leftovers, set(), "unsubstituted ${...} in the user data")
    match = re.search(r"cat > /etc/egret/egret.toml <<'EOF'\n(.*?)\nEOF\n", text, re.S)
    c.need(match is not None, "user data writes /etc/egret/egret.toml")
    try:
        config = tomllib.loads(match.group(1))
    except tomllib.TOMLDecodeError as e:
        raise Failed(f"egret.toml does not parse: {e}") from e
    transparent = ctx["mode"] != "explicit"
    want_listen = {"explicit": ["0.0.0.0:3128"], "admin": "0.0.0.0:9090",
                   "proxy_protocol": "required" if ctx["privatelink"] else "off"}
    if transparent:
        want_listen |= {"transparent_http": ["0.0.0.0:3129"],
                        "transparent_tls": ["0.0.0.0:3130"]}
    c.equal(config.get("listen"), want_listen, "egret.toml [listen]")
    c.equal(config.get("allowlist"),
            {"ssm_parameter": ctx["outputs"]["AllowlistParameter"], "reload_interval": "60s"},
            "egret.toml [allowlist]")
    c.equal(config.get("limits"), {"drain_grace": "25s", "drain_timeout": "30s"},
            "egret.toml [limits]")
    log = dict(config.get("log", {}))
    cloudwatch = log.pop("cloudwatch", None)
    c.equal(log, {"format": "squid", "path": "/var/log/egret/access.log"}, "egret.toml [log]")
    c.equal(cloudwatch, {"group": ctx["outputs"]["LogGroup"], "stream": "{instance_id}",
                         "retention_days": int(ctx["retention"])},
            "egret.toml [log.cloudwatch]")
    ctx["drain"] = duration(config["limits"]["drain_grace"]) + duration(
        config["limits"]["drain_timeout"])

    # The interface chosen for each public subnet, and egret-setup's arguments.
    cases = dict(re.findall(r"^\s*(subnet-[0-9a-f]+)\) eni=(\S+) ;;$", text, re.M))
    c.equal(cases, ctx["eni_by_subnet"], "user data: interface chosen for each public subnet")
    setup = re.search(r"^setup=\((.*?)\)$", text, re.M | re.S)
    c.need(setup is not None, "user data builds egret-setup's arguments")
    words = shlex.split(setup.group(1).replace("\\\n", " "))
    args = dict(zip(words[::2], words[1::2]))
    c.equal(args, {"--mode": ctx["mode"], "--private-cidrs": ctx["private_cidrs"],
                   "--vpc-cidr": ctx["vpc_cidr"], "--region": REGION},
            "egret-setup arguments")
    c.check(re.search(r"^if \[ '" + ctx["mode"] + r"' != explicit \]; then "
                      r"setup\+=\(--eni-id \"\$eni\"\); fi$", text, re.M) is not None,
            "egret-setup gets --eni-id outside explicit mode")
    c.check(re.search(r"^egret-setup \"\$\{setup\[@\]\}\"$", text, re.M) is not None,
            "user data runs egret-setup")
    c.check(f"-o /tmp/egret.deb '{PACKAGE_URL}'" in text, "user data downloads PackageUrl")
    c.check(re.search(r"^packages=\(/tmp/egret.deb\)\nif \[ '" + ctx["mode"]
                      + r"' != explicit \]; then packages\+=\(awscli\); fi\n", text, re.M)
            is not None, "user data installs the package, and the AWS CLI for egret-setup")
    c.check(re.search(r'^apt-get install -y -q "\$\{packages\[@\]\}"$', text, re.M)
            is not None, "user data runs apt-get install")
    c.check(text.index("apt-get install") < text.index("cat > /etc/egret/egret.toml")
            < text.index('\negret-setup "'), "install, then the configuration, then egret-setup")
    c.check(f"Environment=AWS_REGION={REGION}" in text, "the service gets the region")


def check_stack(aws, c, ctx, template, resolver):
    """Checks everything the stack made against what `ctx` says it should be."""
    check_outputs(aws, c, ctx, template, resolver)
    check_allowlist(aws, c, ctx, resolver)
    check_logs(aws, c, ctx, resolver)
    check_balancer(aws, c, ctx, resolver)
    check_launch_template(aws, c, ctx, resolver)
    check_groups(aws, c, ctx, resolver)
    check_security_group(aws, c, ctx, resolver)
    check_role(aws, c, ctx, resolver)
    check_routes(aws, c, ctx, resolver)


def check_outputs(aws, c, ctx, template, resolver):
    """Checks the stack's outputs, and the endpoint service they name."""
    stack = ctx["stack"]
    outputs = ctx["outputs"]
    physical = resolver.physical
    want = {name for name, o in template["Outputs"].items()
            if "Condition" not in o or resolver.condition(o["Condition"])}
    c.equal(set(outputs), want, "outputs")
    c.equal(outputs.get("ProxyPort"), "3128", "ProxyPort")
    c.equal(outputs.get("LogGroup"), f"/egret/{stack}/access", "LogGroup")
    c.equal(outputs.get("AllowlistParameter"), f"/egret/{stack}/allowlist", "AllowlistParameter")
    balancer = aws.elbv2.describe_load_balancers(
        LoadBalancerArns=[physical["LoadBalancer"]])["LoadBalancers"][0]
    c.equal(outputs.get("ProxyAddress"), balancer["DNSName"], "ProxyAddress")
    c.check(outputs.get("ProxyAddress", "").endswith(f".{REGION}.elb.amazonaws.com"),
            f"ProxyAddress is a load balancer name: {outputs.get('ProxyAddress')!r}")
    if ctx["privatelink"]:
        services = aws.ec2.describe_vpc_endpoint_service_configurations()[
            "ServiceConfigurations"]
        service = [s for s in services if s["ServiceId"] == physical["EndpointService"]]
        c.need(len(service) == 1, "the endpoint service exists")
        service = service[0]
        c.equal(outputs.get("EndpointServiceName"), service["ServiceName"],
                "EndpointServiceName")
        c.check(re.fullmatch(rf"com\.amazonaws\.vpce\.{REGION}\.vpce-svc-[0-9a-f]+",
                             outputs.get("EndpointServiceName", "")) is not None,
                "EndpointServiceName looks like a PrivateLink service name")
        c.equal(service["NetworkLoadBalancerArns"], [physical["LoadBalancer"]],
                "endpoint service's load balancer")
        c.equal(service["AcceptanceRequired"], False, "endpoint service accepts by itself")
        allowed = aws.ec2.describe_vpc_endpoint_service_permissions(
            ServiceId=service["ServiceId"])["AllowedPrincipals"]
        c.equal(sorted(p["Principal"] for p in allowed),
                sorted(p for p in resolver.values["AllowedPrincipals"] if p),
                "endpoint service's allowed principals")
    else:
        c.check("EndpointService" not in physical, "no endpoint service without PrivateLink")


def check_allowlist(aws, c, ctx, resolver):
    """Checks the SSM parameter holding the allowlist."""
    stack = ctx["stack"]
    parameter = aws.ssm.get_parameter(Name=f"/egret/{stack}/allowlist")["Parameter"]
    c.equal(parameter["Value"], ",".join(resolver.values["WhitelistedDomains"]),
            "allowlist parameter value")
    c.equal(parameter["Type"], "String", "allowlist parameter type")


def check_logs(aws, c, ctx, resolver):
    """Checks the log group, the metric filter on it, and the alarm."""
    stack = ctx["stack"]
    outputs = ctx["outputs"]
    physical = resolver.physical
    groups = aws.logs.describe_log_groups(logGroupNamePrefix=f"/egret/{stack}/")["logGroups"]
    c.equal([(g["logGroupName"], g.get("retentionInDays")) for g in groups],
            [(f"/egret/{stack}/access", int(ctx["retention"]))], "log group and retention")
    filters = aws.logs.describe_metric_filters(logGroupName=f"/egret/{stack}/access")[
        "metricFilters"]
    c.need(len(filters) == 1, f"one metric filter on the log group, got {len(filters)}")
    c.equal(filters[0]["filterPattern"], '"TCP_DENIED"', "metric filter pattern")
    c.equal([(t["metricName"], t["metricNamespace"], t["metricValue"], t.get("defaultValue"))
             for t in filters[0]["metricTransformations"]],
            [("AccessDenied", "Egret", "1", 0.0)], "metric filter transformation")
    aws.logs.create_log_stream(logGroupName=f"/egret/{stack}/access", logStreamName="i-verify")
    now = int(time.time() * 1000)
    aws.logs.put_log_events(
        logGroupName=f"/egret/{stack}/access", logStreamName="i-verify",
        logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(SAMPLE_LINES)])
    matched = aws.logs.filter_log_events(logGroupName=f"/egret/{stack}/access",
                                         filterPattern=filters[0]["filterPattern"])["events"]
    c.equal([e["message"] for e in matched], SAMPLE_LINES[1:],
            "lines the metric filter counts")
    alarms = aws.cloudwatch.describe_alarms(AlarmNamePrefix=stack)["MetricAlarms"]
    if ctx["threshold"] != "0":
        c.need(len(alarms) == 1, f"one alarm, got {len(alarms)}")
        alarm = alarms[0]
        c.equal((alarm["Namespace"], alarm["MetricName"], alarm["Statistic"], alarm["Period"],
                 alarm["Threshold"], alarm["ComparisonOperator"]),
                ("Egret", "AccessDenied", "Sum", 300, float(ctx["threshold"]),
                 "GreaterThanOrEqualToThreshold"), "alarm")
        c.equal(alarm["AlarmActions"], [outputs.get("AlarmTopic")], "alarm notifies the topic")
        subscriptions = aws.sns.list_subscriptions_by_topic(
            TopicArn=outputs["AlarmTopic"])["Subscriptions"]
        want = [("email", ctx["email"])] if ctx["email"] else []
        c.equal([(s["Protocol"], s["Endpoint"]) for s in subscriptions], want,
                "alarm topic subscriptions")
    else:
        c.equal(alarms, [], "no alarm with DeniedAlarmThreshold 0")
        c.check("AlarmTopic" not in physical, "no alarm topic with DeniedAlarmThreshold 0")


def check_balancer(aws, c, ctx, resolver):
    """Checks the load balancer, its listener and its target group."""
    physical = resolver.physical
    balancer = aws.elbv2.describe_load_balancers(
        LoadBalancerArns=[physical["LoadBalancer"]])["LoadBalancers"][0]
    c.equal((balancer["Type"], balancer["Scheme"]), ("network", "internal"), "load balancer kind")
    c.equal(sorted(z["SubnetId"] for z in balancer["AvailabilityZones"]),
            sorted(ctx["private_subnets"]), "load balancer subnets")
    attributes = {a["Key"]: a["Value"] for a in aws.elbv2.describe_load_balancer_attributes(
        LoadBalancerArn=physical["LoadBalancer"])["Attributes"]}
    c.equal(attributes.get("load_balancing.cross_zone.enabled"), "true", "cross-zone")
    listeners = aws.elbv2.describe_listeners(LoadBalancerArn=physical["LoadBalancer"])[
        "Listeners"]
    c.equal([(x["Protocol"], x["Port"], x["DefaultActions"][0]["TargetGroupArn"])
             for x in listeners], [("TCP", 3128, physical["ProxyTargetGroup"])], "listener")
    attributes = {a["Key"]: a["Value"] for a in aws.elbv2.describe_listener_attributes(
        ListenerArn=physical["ProxyListener"])["Attributes"]}
    c.check(int(attributes.get("tcp.idle_timeout.seconds", 0)) > 350,
            f"listener idle timeout above 350 s: {attributes}")
    group = aws.elbv2.describe_target_groups(
        TargetGroupArns=[physical["ProxyTargetGroup"]])["TargetGroups"][0]
    c.equal((group["Protocol"], group["Port"], group["TargetType"], group["VpcId"]),
            ("TCP", 3128, "instance", ctx["vpc"]), "target group")
    c.equal((group["HealthCheckProtocol"], group["HealthCheckPort"], group["HealthCheckPath"]),
            ("HTTP", "9090", "/readyz"), "health check")
    attributes = {a["Key"]: a["Value"] for a in aws.elbv2.describe_target_group_attributes(
        TargetGroupArn=physical["ProxyTargetGroup"])["Attributes"]}
    c.equal(attributes.get("proxy_protocol_v2.enabled"),
            "true" if ctx["privatelink"] else "false", "PROXY protocol v2")
    ctx["deregistration_delay"] = int(attributes.get("deregistration_delay.timeout_seconds", 0))


def check_launch_template(aws, c, ctx, resolver):
    """Checks the launch template and its user data."""
    stack = ctx["stack"]
    physical = resolver.physical
    template_id = physical["LaunchTemplate"]
    version = aws.ec2.describe_launch_template_versions(
        LaunchTemplateId=template_id, Versions=["$Latest"])["LaunchTemplateVersions"][0]
    ctx["launch_template_version"] = version["VersionNumber"]
    data = ctx["launch_template_data"] = version["LaunchTemplateData"]
    c.equal(data.get("ImageId"), ctx["ami"], "launch template AMI")
    c.equal(data.get("KeyName"), ctx["key_name"] or None, "launch template key pair")
    c.equal(data.get("MetadataOptions", {}).get("HttpTokens"), "required", "IMDSv2 only")
    interface = data.get("NetworkInterfaces", [{}])[0]
    c.equal((interface.get("DeviceIndex"), interface.get("AssociatePublicIpAddress"),
             interface.get("Groups")), (0, True, [physical["GatewaySecurityGroup"]]),
            "launch template interface")
    tags = {t["Key"]: t["Value"] for spec in data.get("TagSpecifications", [])
            for t in spec["Tags"]}
    c.equal(tags.get("egret:stack"), stack, "instances carry the stack tag")
    check_user_data(c, base64.b64decode(data["UserData"]).decode(), ctx)
    c.check(ctx["deregistration_delay"] > ctx["drain"],
            f"deregistration delay {ctx['deregistration_delay']} s above drain_grace + "
            f"drain_timeout {ctx['drain']} s")


def check_groups(aws, c, ctx, resolver):
    """Checks the two Auto Scaling groups, one per zone."""
    physical = resolver.physical
    names = [physical["GatewayGroupA"], physical["GatewayGroupB"]]
    groups = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=names)[
        "AutoScalingGroups"]
    groups.sort(key=lambda g: names.index(g["AutoScalingGroupName"]))
    c.need(len(groups) == 2, "two Auto Scaling groups")
    for group, subnet in zip(groups, ctx["public_subnets"]):
        c.equal((group["MinSize"], group["MaxSize"], group["DesiredCapacity"]), (1, 1, 1),
                "group size")
        c.equal(group["VPCZoneIdentifier"], subnet, "group subnet")
        c.equal(group["TargetGroupARNs"], [physical["ProxyTargetGroup"]], "group targets")
        c.equal(group["HealthCheckType"], "ELB", "group health check")
        c.equal(group.get("LaunchTemplate", {}).get("LaunchTemplateId"), physical["LaunchTemplate"],
                "group launch template")
        c.equal([i["AvailabilityZone"] for i in group["Instances"]],
                [ctx["zone_of"][subnet]], "group instance zone")
    ctx["instances"] = sorted(i["InstanceId"] for g in groups for i in g["Instances"])


def check_security_group(aws, c, ctx, resolver):
    """Checks the gateway's security group."""
    transparent = ctx["mode"] != "explicit"
    physical = resolver.physical
    rules = aws.ec2.describe_security_groups(GroupIds=[physical["GatewaySecurityGroup"]])[
        "SecurityGroups"][0]["IpPermissions"]
    got = sorted((r["IpProtocol"], r["FromPort"], r["ToPort"], ip["CidrIp"])
                 for r in rules for ip in r.get("IpRanges", []))
    ports = [("tcp", 3128), ("tcp", 9090), ("tcp", 22)]
    if transparent:
        ports += [("tcp", 80), ("tcp", 443), ("udp", 443)]
    c.equal(got, sorted((p, n, n, ctx["vpc_cidr"]) for p, n in ports),
            "security group ingress")
    c.check(all(not r.get("UserIdGroupPairs") and not r.get("Ipv6Ranges") for r in rules),
            "no other ingress sources")


def check_role(aws, c, ctx, resolver):
    """Checks the instance profile and its role's permissions."""
    stack = ctx["stack"]
    transparent = ctx["mode"] != "explicit"
    physical = resolver.physical
    profile = aws.iam.get_instance_profile(InstanceProfileName=physical["InstanceProfile"])
    roles = [r["RoleName"] for r in profile["InstanceProfile"]["Roles"]]
    c.equal(roles, [physical["InstanceRole"]], "instance profile role")
    c.equal(ctx["launch_template_data"].get("IamInstanceProfile", {}).get("Arn"),
            profile["InstanceProfile"]["Arn"], "launch template instance profile")
    statements = []
    for name in aws.iam.list_role_policies(RoleName=physical["InstanceRole"])["PolicyNames"]:
        document = aws.iam.get_role_policy(RoleName=physical["InstanceRole"],
                                           PolicyName=name)["PolicyDocument"]
        if isinstance(document, str):
            # moto keeps a policy written by CloudFormation as Python's repr of it.
            document = ast.literal_eval(document)
        statements += document["Statement"]
    c.equal(aws.iam.list_attached_role_policies(RoleName=physical["InstanceRole"])[
        "AttachedPolicies"], [], "no managed policies on the role")
    group_arn = f"arn:aws:logs:{REGION}:123456789012:log-group:/egret/{stack}/access"
    want = {
        "AccessLog": (["logs:CreateLogStream", "logs:PutLogEvents", "logs:PutRetentionPolicy"],
                      [group_arn, group_arn + ":*"], None),
        "Allowlist": (["ssm:GetParameter"],
                      [f"arn:aws:ssm:{REGION}:123456789012:parameter/egret/{stack}/allowlist"],
                      None),
    }
    if transparent:
        want["FindTransparentInterface"] = (["ec2:DescribeNetworkInterfaces"], ["*"], None)
        want["AttachTransparentInterface"] = (
            ["ec2:AttachNetworkInterface"],
            [f"arn:aws:ec2:{REGION}:123456789012:network-interface/{physical[n]}"
             for n in ["TransparentInterfaceA", "TransparentInterfaceB"]]
            + [f"arn:aws:ec2:{REGION}:123456789012:instance/*"],
            {"StringEquals": {"aws:ResourceTag/egret:stack": stack}})

    def as_list(x):
        return x if isinstance(x, list) else [x]

    got = {s.get("Sid"): (sorted(as_list(s["Action"])), as_list(s["Resource"]),
                          s.get("Condition")) for s in statements}
    c.equal(got, want, "instance role permissions")
    c.check(all(s["Effect"] == "Allow" for s in statements), "role statements allow only")


def check_routes(aws, c, ctx, resolver):
    """Checks the transparent interfaces and the private default routes."""
    stack = ctx["stack"]
    transparent = ctx["mode"] != "explicit"
    physical = resolver.physical
    if transparent:
        for letter, subnet, table, private in zip(
                "AB", ctx["public_subnets"], ctx["private_route_tables"],
                ctx["private_subnets"]):
            c.need(f"TransparentInterface{letter}" in physical,
                   f"transparent interface {letter} exists")
            eni = aws.ec2.describe_network_interfaces(NetworkInterfaceIds=[
                physical[f"TransparentInterface{letter}"]])["NetworkInterfaces"][0]
            c.equal((eni["SubnetId"], eni["SourceDestCheck"],
                     [g["GroupId"] for g in eni["Groups"]]),
                    (subnet, False, [physical["GatewaySecurityGroup"]]),
                    f"transparent interface {letter}")
            c.equal({t["Key"]: t["Value"] for t in eni.get("TagSet", [])}.get("egret:stack"),
                    stack, f"transparent interface {letter} carries the stack tag")
            routes = aws.ec2.describe_route_tables(RouteTableIds=[table])["RouteTables"][0][
                "Routes"]
            default = [r for r in routes if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
            c.equal([r.get("NetworkInterfaceId") for r in default],
                    [eni["NetworkInterfaceId"]], f"private route table {letter} default route")
            c.equal(ctx["zone_of"][private], eni["AvailabilityZone"],
                    f"zone {letter}: clients and their gateway interface in the same zone")
    else:
        c.check(not any(n.startswith("TransparentInterface") for n in physical),
                "no transparent interfaces in explicit mode")
        for table in ctx["private_route_tables"]:
            routes = aws.ec2.describe_route_tables(RouteTableIds=[table])["RouteTables"][0][
                "Routes"]
            c.check(all(r.get("DestinationCidrBlock") != "0.0.0.0/0" for r in routes),
                    f"no default route in {table} in explicit mode")


def run_scenario(aws, c, name, template_name, parameters, network, supported):
    c.scope = name
    stack = f"egret-{name}"[:60]
    template = load_template(template_name)
    variant, removed, dropped = moto_variant(template, supported)
    parameters = {"PackageUrl": PACKAGE_URL, **parameters}
    # moto splits a list parameter's value when it is given, not its default.
    parameters |= {k: str(p.get("Default", "")) for k, p in template["Parameters"].items()
                   if p["Type"] == "CommaDelimitedList" and k not in parameters}
    c.need(not Resolver(template, parameters, stack).rules_broken(),
           "the scenario's parameters pass the template's Rules")
    created = aws.cloudformation.create_stack(
        StackName=stack, TemplateBody=json.dumps(variant), Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()])
    stack_id = created["StackId"]
    described = wait_stack(aws, stack_id, "CREATE_COMPLETE")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                for r in aws.cloudformation.describe_stack_resources(StackName=stack_id)[
                    "StackResources"] if r.get("PhysicalResourceId")}
    resolver = Resolver(template, parameters, stack, physical)

    # CloudFormation's part that moto skips, in the template's order (dependencies first).
    for logical, resource in removed.items():
        condition = resource.get("Condition")
        if condition is None or resolver.condition(condition):
            physical[logical] = create_unsupported(aws, stack, logical, resource, resolver)
    for key, output in dropped.items():
        if "Condition" not in output or resolver.condition(output["Condition"]):
            outputs[key] = resolver.value(output["Value"])
    apply_ignored_properties(aws, template, resolver)

    new_vpc = template_name == "new-vpc.yaml"
    if new_vpc:
        subnets = aws.ec2.describe_subnets(SubnetIds=[physical[n] for n in [
            "PublicSubnetA", "PublicSubnetB", "PrivateSubnetA", "PrivateSubnetB"]])["Subnets"]
        zone_of = {s["SubnetId"]: s["AvailabilityZone"] for s in subnets}
        private_cidrs = ",".join([resolver.values["PrivateSubnetACidr"],
                                  resolver.values["PrivateSubnetBCidr"]])
    else:
        zone_of = dict(zip(network["public"] + network["private"], network["zones"] * 2))
        private_cidrs = network["cidr"]
    names = {n: physical.get(n, resolver.values.get(n)) for n in [
        "PublicSubnetA", "PublicSubnetB", "PrivateSubnetA", "PrivateSubnetB",
        "PrivateRouteTableA", "PrivateRouteTableB"]}
    mode = resolver.values["Mode"]
    ctx = {
        "stack": stack,
        "outputs": outputs,
        "mode": mode,
        "privatelink": resolver.condition("HasPrivateLink"),
        "threshold": resolver.values["DeniedAlarmThreshold"],
        "email": resolver.values["AlarmEmail"],
        "retention": resolver.values["LogRetentionDays"],
        "key_name": resolver.values["KeyName"],
        "ami": aws.ssm.get_parameter(Name=AMI_PARAMETER)["Parameter"]["Value"],
        "vpc": physical.get("Vpc", resolver.values.get("VpcId")),
        "vpc_cidr": resolver.values["VpcCidr"],
        "private_cidrs": private_cidrs,
        "public_subnets": [names["PublicSubnetA"], names["PublicSubnetB"]],
        "private_subnets": [names["PrivateSubnetA"], names["PrivateSubnetB"]],
        "private_route_tables": [names["PrivateRouteTableA"], names["PrivateRouteTableB"]]
        if new_vpc else network["private_route_tables"],
        "zone_of": zone_of,
        "eni_by_subnet": {
            names["PublicSubnetA"]: physical.get("TransparentInterfaceA", "none"),
            names["PublicSubnetB"]: physical.get("TransparentInterfaceB", "none"),
        },
    }
    c.check(zone_of[ctx["public_subnets"][0]] != zone_of[ctx["public_subnets"][1]],
            "the two gateways are in two zones")
    check_stack(aws, c, ctx, template, resolver)

    # A new allowlist: only the parameter changes; the instances stay.
    aws.cloudformation.update_stack(
        StackName=stack_id, UsePreviousTemplate=True, Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": k, "UsePreviousValue": True}
                    for k in parameters if k != "WhitelistedDomains"]
        + [{"ParameterKey": "WhitelistedDomains", "ParameterValue": UPDATED_DOMAINS}])
    wait_stack(aws, stack_id, "UPDATE_COMPLETE")
    value = aws.ssm.get_parameter(Name=f"/egret/{stack}/allowlist")["Parameter"]["Value"]
    c.equal(value, UPDATED_DOMAINS, "allowlist parameter after the update")
    version = aws.ec2.describe_launch_template_versions(
        LaunchTemplateId=physical["LaunchTemplate"], Versions=["$Latest"])[
        "LaunchTemplateVersions"][0]["VersionNumber"]
    c.equal(version, ctx["launch_template_version"],
            "launch template version after an allowlist update (no instance replaced)")
    groups = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[
        physical["GatewayGroupA"], physical["GatewayGroupB"]])["AutoScalingGroups"]
    c.equal(sorted(i["InstanceId"] for g in groups for i in g["Instances"]), ctx["instances"],
            "instances after an allowlist update")

    # Delete: the stack's resources go, an existing VPC's stay as they were.
    aws.cloudformation.delete_stack(StackName=stack_id)
    wait_stack(aws, stack_id, "DELETE_COMPLETE")
    left = aws.ssm.get_parameters(Names=[f"/egret/{stack}/allowlist"])["Parameters"]
    c.equal(left, [], "allowlist parameter after delete")
    groups = aws.logs.describe_log_groups(logGroupNamePrefix=f"/egret/{stack}/")["logGroups"]
    c.equal(groups, [], "log group after delete")
    balancers = aws.elbv2.describe_load_balancers()["LoadBalancers"]
    c.check(all(b["LoadBalancerArn"] != physical["LoadBalancer"] for b in balancers),
            "load balancer after delete")
    if not new_vpc:
        for table in network["private_route_tables"]:
            routes = aws.ec2.describe_route_tables(RouteTableIds=[table])["RouteTables"][0][
                "Routes"]
            c.check(all(r.get("DestinationCidrBlock") != "0.0.0.0/0" for r in routes),
                    f"no default route left in {table} after delete")
        c.equal(len(aws.ec2.describe_subnets(Filters=[
            {"Name": "vpc-id", "Values": [network["vpc"]]}])["Subnets"]), 4,
            "the existing VPC's subnets stay")


def check_templates_agree(c):
    """The two templates share the gateway: the boot script must be the same text."""
    c.scope = "templates"

    def script(name):
        user_data = load_template(name)["Resources"]["LaunchTemplate"]["Properties"][
            "LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"]
        return user_data[0]

    new, existing = script("new-vpc.yaml"), script("existing-vpc.yaml")
    diff = list(difflib.unified_diff(new.splitlines(), existing.splitlines(), "new-vpc.yaml",
                                     "existing-vpc.yaml", n=0, lineterm=""))
    c.check(not diff, "the boot script differs between the templates:\n" + "\n".join(diff))
    for name, parameters in FORBIDDEN:
        broken = Resolver(load_template(name), {"PackageUrl": PACKAGE_URL, **parameters},
                          "egret-rules").rules_broken()
        c.check(bool(broken), f"{name} refuses {parameters}")


def main():
    def timeout(signum, frame):
        raise Failed(f"verify.py took more than {TIME_LIMIT} s")

    signal.signal(signal.SIGALRM, timeout)
    signal.alarm(TIME_LIMIT)
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    })
    os.environ.pop("AWS_PROFILE", None)
    c = Checks()
    with tempfile.TemporaryFile("w+") as log:
        server = None
        try:
            from moto.cloudformation.parsing import get_model_map

            used = {r["Type"] for name in ["new-vpc.yaml", "existing-vpc.yaml"]
                    for r in load_template(name)["Resources"].values()}
            supported = set(get_model_map())
            c.scope = "moto"
            c.equal(used - supported, UNSUPPORTED,
                    "resource types moto cannot deploy (update UNSUPPORTED, the comment at "
                    "the top and README.md)")
            check_templates_agree(c)
            server, endpoint = start_moto(log)
            aws = Aws(endpoint)
            images = aws.ec2.describe_images(Owners=["amazon"])["Images"]
            aws.ssm.put_parameter(Name=AMI_PARAMETER, Type="String",
                                  Value=images[0]["ImageId"])
            aws.ec2.create_key_pair(KeyName="egret-verify")
            network = make_network(aws)
            for name, template_name, parameters in scenarios(network):
                started = time.monotonic()
                failed = len(c.failures)
                try:
                    run_scenario(aws, c, name, template_name, parameters, network, supported)
                except Failed:
                    pass
                result = "ok" if len(c.failures) == failed else "FAILED"
                print(f"verify.py: {name}: {result} ({time.monotonic() - started:.1f} s)",
                      flush=True)
        except Failed as e:
            c.failures.append(f"{c.scope}: {e}")
        except Exception as e:  # noqa: BLE001 - an API error is a failure to report
            where = traceback.extract_tb(e.__traceback__)[-1]
            c.failures.append(f"{c.scope}: {type(e).__name__}: {e} (verify.py line "
                              f"{where.lineno}, in {where.name})")
        finally:
            signal.alarm(0)
            if server is not None:
                stop(server)
        if c.failures:
            log.seek(0)
            lines = [x for x in log.read().splitlines() if '"POST / HTTP/1.1" 200' not in x]
            print("verify.py: moto_server's log, less its successful requests, ends with:\n"
                  + "\n".join(lines[-30:]), file=sys.stderr)
    for failure in c.failures:
        print(f"verify.py: FAILED {failure}", file=sys.stderr)
    print(f"cloudformation: {c.passed} passed, {len(c.failures)} failed")
    return 1 if c.failures else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve-moto"]:
        serve_moto(int(sys.argv[2]))
    else:
        sys.exit(main())
