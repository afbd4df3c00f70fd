"""JSON Schema checks shared by the REST API (request bodies) and the
agent (tasks): ``pattern`` with ECMA-262 meaning, one validator per schema.
"""

import re

import jsonschema


def _ecma_pattern(validator, pattern, instance, schema):
    """``pattern`` as JSON Schema means it (ECMA-262): ``$`` is the end of
    the string, not "before a final newline" as in Python's ``re``.
    """
    if not validator.is_type(instance, 'string'):
        return
    if (re.search(pattern, instance) is None
            or (pattern.endswith('$') and instance.endswith('\n'))):
        yield jsonschema.ValidationError(
            '%r does not match %r' % (instance[:80], pattern))


Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {'pattern': _ecma_pattern})

_VALIDATORS = {}


def _validator(schema):
    """The validator of ``schema`` (schemas are module constants: building
    a validator on every request or task costs more than the check).
    """
    entry = _VALIDATORS.get(id(schema))
    if entry is None or entry[0] is not schema:
        entry = _VALIDATORS[id(schema)] = (schema, Validator(schema))
    return entry[1]


def first_error(instance, schema):
    """The most relevant error of ``instance`` against ``schema``, or None;
    a valid instance is checked once, without collecting errors.
    """
    checker = _validator(schema)
    if checker.is_valid(instance):
        return None
    return jsonschema.exceptions.best_match(checker.iter_errors(instance))
