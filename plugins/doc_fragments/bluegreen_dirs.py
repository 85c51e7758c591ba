"""The `dirs` option of the modules that make a node's directories (module_utils/bluegreen_files.py
DIR_OPTIONS and make_dirs): bluegreen_release and bluegreen_files (extends_documentation_fragment)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  dirs:
    description: Directories to make (with parents) and keep at their mode and owner, before anything else;
      an entry with an empty I(path) is skipped (an optional directory that is turned off).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The directory.
        type: str
        required: true
      mode:
        description: Its mode, for example C('0750').
        type: raw
      owner:
        description: Its owner (name or id); default, unchanged.
        type: str
      group:
        description: Its group (name or id); default, unchanged.
        type: str
"""
