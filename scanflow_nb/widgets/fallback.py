"""What a widget says where widgets cannot load (a terminal, a text export, a front end without a widget manager)."""

FRONT_ENDS = (
    "JupyterLab 4, Jupyter Notebook 7, VS Code, or Colab after google.colab.output.enable_custom_widget_manager()"
)


def text_repr(what: str, body: str, instead: str) -> str:
    """A text/plain rendering: what the widget is, where it shows, how to see the same as text, then `body`."""
    head = f"[{what}: an interactive widget; it shows in {FRONT_ENDS}. As text: {instead}]"
    return f"{head}\n{body}" if body else head
