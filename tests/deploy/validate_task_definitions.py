"""Validates task definitions against the ECS API model (botocore):
the one in the CloudFormation template (converted from CloudFormation's
property names to the API's) and every JSON file given (what the scripts
registered). The template's task definition is checked twice, with every
condition true and with every condition false, so that both branches of
each !If are valid. Exits 1 with the model's complaints."""

import json
import sys

import botocore.session
import yaml
from botocore.validate import ParamValidator

# Keys whose values are maps of user keys, not API properties.
USER_MAPS = {"Options", "DockerLabels", "SystemControls"}


class Tag:
    """A CloudFormation intrinsic function (!If, !Ref, !Sub, ...)."""

    def __init__(self, name, value):
        self.name, self.value = name, value


class CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return Tag(suffix, loader.construct_scalar(node))
    if isinstance(node, yaml.SequenceNode):
        return Tag(suffix, loader.construct_sequence(node, deep=True))
    return Tag(suffix, loader.construct_mapping(node, deep=True))


CfnLoader.add_multi_constructor("!", _tag)

REMOVED = object()


def resolve(value, conditions):
    """Chooses each !If's branch by `conditions`, drops AWS::NoValue and
    stands a placeholder string in for every other intrinsic function."""
    if isinstance(value, Tag):
        if value.name == "If":
            _, if_true, if_false = value.value
            return resolve(if_true if conditions else if_false, conditions)
        if value.name == "Ref" and value.value == "AWS::NoValue":
            return REMOVED
        return f"<{value.name}>"
    if isinstance(value, dict):
        resolved = {k: resolve(v, conditions) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not REMOVED}
    if isinstance(value, list):
        return [v for v in (resolve(v, conditions) for v in value) if v is not REMOVED]
    return value


def to_api(value, key=None):
    if isinstance(value, dict):
        if key in USER_MAPS:
            return {k: to_api(v) for k, v in value.items()}
        return {k[0].lower() + k[1:]: to_api(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [to_api(v, key) for v in value]
    return value


def main(template, files):
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    with open(template) as f:
        resources = yaml.load(f, Loader=CfnLoader)["Resources"]
    inputs = {}
    for name, r in resources.items():
        if r["Type"] == "AWS::ECS::TaskDefinition":
            for conditions in (True, False):
                label = f"{template}:{name} (conditions {'true' if conditions else 'false'})"
                inputs[label] = to_api(resolve(r["Properties"], conditions))
    for path in files:
        with open(path) as f:
            inputs[path] = json.load(f)
    if len(inputs) == 0:
        sys.exit("no task definition found")
    failed = False
    for name, params in inputs.items():
        report = ParamValidator().validate(params, shape)
        if report.has_errors():
            failed = True
            print(f"{name}:\n{report.generate_report()}", file=sys.stderr)
        else:
            print(f"ok: {name} is a valid RegisterTaskDefinition input")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
