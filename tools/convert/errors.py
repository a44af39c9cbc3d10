"""The one exception alum-convert raises for bad input (printed as ``alum-convert: error: ...``)."""


class ConvertError(ValueError):
    """Bad input: a missing shard, a mismatched layout, an unsupported model, ...

    The message names the file or the field at fault.
    """
