"""mkdocs hooks: the notebooks in notebooks/ become pages of the site.

The notebooks live next to docs/, not in it, so that `make test-notebooks`
and readers on GitHub find them where the README says. The site adds each
one as the page `notebooks/NAME.ipynb`, which mkdocs-jupyter renders
without running it, and points the guides' `../notebooks/NAME.ipynb` links
(right on GitHub) at those pages.
"""

import pathlib
import posixpath
import re

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

# A markdown link's target, up to an optional anchor.
_LINK = re.compile(r"(\]\()([^)\s#]+)")


# Above mkdocs-jupyter's on_files (priority 0), which turns the .ipynb files
# it finds into pages: the notebooks must be among the files by then.
@event_priority(100)
def on_files(files, config):
    # The repository root as the source folder gives each notebook the page
    # path notebooks/NAME.ipynb and its real file; mkdocs-jupyter reads
    # that file, and cannot read a File.generated one.
    root = pathlib.Path(config["config_file_path"]).resolve().parent
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        files.append(
            File(
                f"notebooks/{path.name}",
                src_dir=str(root),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files


def on_page_markdown(markdown, page, config, files):
    page_dir = posixpath.dirname(page.file.src_uri)

    def retarget(match):
        target = match.group(2)
        # Relative to docs/: "../notebooks/NAME.ipynb" is outside it.
        resolved = posixpath.normpath(posixpath.join(page_dir, target))
        if not resolved.startswith("../notebooks/"):
            return match.group()
        site_path = resolved[len("../") :]
        return match.group(1) + posixpath.relpath(site_path, page_dir or ".")

    return _LINK.sub(retarget, markdown)
