"""Evaluates the CloudWatch Logs metric filters of a CloudFormation template
against real log lines, as CloudWatch would: the JSON filter-pattern
subset the template uses ({ ... } with $.field selectors, = and != on
strings with * wildcards, numeric comparisons, && and ||, parentheses).

Usage: metric_filters.py TEMPLATE LOG_LINES
Prints {"FilterName": [indices of the matching lines]} as JSON. Exits 1
when a pattern uses syntax outside that subset, mixes && and || without
parentheses, names a field that no log line has (so field names must be
the ones the code logs), or when a filter's metric value is not a number
in every line it matches."""

import json
import re
import sys

import yaml

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from validate_task_definitions import CfnLoader  # noqa: E402

TOKEN = re.compile(
    r'\s*(?:(?P<paren>[()])|(?P<logic>&&|\|\|)|(?P<op>!=|>=|<=|=|<|>)'
    r'|(?P<selector>\$\.[A-Za-z_][A-Za-z0-9_.]*)|"(?P<string>[^"]*)"|(?P<number>-?\d+(?:\.\d+)?))'
)


def tokens(text):
    position, found = 0, []
    while position < len(text.rstrip()):
        match = TOKEN.match(text, position)
        if not match:
            raise SyntaxError(f"unsupported pattern syntax at {text[position:]!r}")
        kind = match.lastgroup
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


class Parser:
    """Builds a tree: ("and"|"or", [children]) or ("cmp", selector, op, value)."""

    def __init__(self, text):
        text = text.strip()
        if not (text.startswith("{") and text.endswith("}")):
            raise SyntaxError(f"not a JSON filter pattern: {text!r}")
        self.tokens, self.at = tokens(text[1:-1]), 0
        self.selectors = set()

    def peek(self):
        return self.tokens[self.at] if self.at < len(self.tokens) else (None, None)

    def take(self, kind):
        found = self.peek()
        if found[0] != kind:
            raise SyntaxError(f"expected {kind}, found {found}")
        self.at += 1
        return found[1]

    def parse(self):
        tree = self.expression()
        if self.at != len(self.tokens):
            raise SyntaxError(f"unexpected {self.peek()}")
        return tree

    def expression(self):
        terms, logic = [self.term()], None
        while self.peek()[0] == "logic":
            op = self.take("logic")
            if logic and op != logic:
                raise SyntaxError("&& and || mixed without parentheses: precedence is not obvious")
            logic = op
            terms.append(self.term())
        if len(terms) == 1:
            return terms[0]
        return ("and" if logic == "&&" else "or", terms)

    def term(self):
        if self.peek() == ("paren", "("):
            self.take("paren")
            tree = self.expression()
            if self.take("paren") != ")":
                raise SyntaxError("unbalanced parentheses")
            return tree
        selector = self.take("selector")
        self.selectors.add(selector)
        op = self.take("op")
        kind, value = self.peek()
        if kind not in ("string", "number"):
            raise SyntaxError(f"expected a value after {selector} {op}")
        self.at += 1
        if kind == "string" and op not in ("=", "!="):
            raise SyntaxError(f"{op} on a string")
        return ("cmp", selector, op, float(value) if kind == "number" else value)


def lookup(event, selector):
    value = event
    for part in selector[2:].split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def string_matches(actual, wanted):
    return re.fullmatch(".*".join(map(re.escape, wanted.split("*"))), actual) is not None


def evaluate(tree, event):
    if tree[0] == "and":
        return all(evaluate(t, event) for t in tree[1])
    if tree[0] == "or":
        return any(evaluate(t, event) for t in tree[1])
    _, selector, op, wanted = tree
    actual = lookup(event, selector)
    if actual is None:
        # CloudWatch: a term on a missing field does not match, = or !=.
        return False
    if isinstance(wanted, str):
        if not isinstance(actual, str):
            return False
        equal = string_matches(actual, wanted)
        return equal if op == "=" else not equal
    if isinstance(actual, bool) or not isinstance(actual, (int, float)):
        return False
    return {"=": actual == wanted, "!=": actual != wanted, ">": actual > wanted, "<": actual < wanted,
            ">=": actual >= wanted, "<=": actual <= wanted}[op]


def main(template_path, log_path):
    with open(template_path) as f:
        resources = yaml.load(f, Loader=CfnLoader)["Resources"]
    with open(log_path) as f:
        events = [json.loads(line) for line in f if line.strip()]
    seen = {"$." + key for event in events for key in event}
    result, problems = {}, []
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Logs::MetricFilter":
            continue
        properties = resource["Properties"]
        parser = Parser(properties["FilterPattern"])
        tree = parser.parse()
        for selector in sorted(parser.selectors - seen):
            problems.append(f"{name}: no log line has {selector}")
        matched = [i for i, event in enumerate(events) if evaluate(tree, event)]
        for transformation in properties["MetricTransformations"]:
            value = transformation["MetricValue"]
            if value.startswith("$."):
                for i in matched:
                    if not isinstance(lookup(events[i], value), (int, float)):
                        problems.append(f"{name}: {value} is not a number in line {i}")
        result[name] = matched
    if problems:
        sys.exit("\n".join(problems))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
