"""What a task panel checks before a run: problems that stop it, warnings the user must read.

A mixin of :class:`~landfuse.ui.task_panel.TaskPanel` (it uses the panel's widgets): the
weights against the chosen model, every slot given a layer or band files, the band mapping
complete, bands matched by position only, layers the model does not use (with the model
that uses them), and what the last "Check inputs" found.
"""

import html
import os
from typing import Dict, List, Tuple

from qgis.core import QgsRasterLayer

from ..core.tasks import InputSlot, get_task
from ..models.registry import ModelSpec, list_model_specs
from ..models.sensors import sensor_of
from ..models.weights_info import mismatch_message

__all__ = ["PanelChecks"]


class PanelChecks:
    """Problems and warnings of a task panel (see the module docstring)."""

    def weights_problems(self, spec: ModelSpec) -> List[str]:
        path = self.weights.filePath()
        if not path and self.training:
            return []  # training starts from scratch unless told
        if not path:
            return [
                "Choose a weights file: no model weights come with LandFuse for your region "
                "(train one in the Train tab from a few labelled polygons, try the demo "
                "scene, or use a published checkpoint)."
            ]
        if not os.path.isfile(path):
            return [f"The weights file does not exist: {path}"]
        named = self.weights_info().model_name
        if named and named != spec.name:
            other = next((s for s in list_model_specs() if s.name == named), None)
            where = (
                f" ({named} is a {get_task(other.task).noun} model: use the "
                f"{get_task(other.task).title} tab.)"
                if other is not None and other.task != self.task_name
                else ""
            )
            return [mismatch_message(path, named, spec.name) + where]
        return []

    def problems(self) -> List[str]:
        """What stops a run with the current choices (shown before the run, not after it)."""
        spec = self.current_spec()
        if spec is None:
            return [f"No {self.task.noun} model is in the registry."]
        found: List[str] = []
        chosen: Dict[str, Tuple[InputSlot, QgsRasterLayer]] = {}
        for slot in self.slots():
            layer = self.layer_for(slot.key)
            files = self.file_buttons[slot.key].problem(
                slot.modality.band_names, sensor_of(slot.modality)
            )
            if files is not None:
                if files:
                    found.append(f"{slot.title}: {files}")
                continue
            if layer is None:
                found.append(f"Choose a layer (or its band files) for {slot.title}.")
                continue
            for other, other_layer in chosen.values():
                if other.modality.key == slot.modality.key and other_layer.id() == layer.id():
                    found.insert(0, f"{other.title} and {slot.title} are the same layer.")
                elif (
                    self.task.shared_bands
                    and other.modality.key == slot.modality.key
                    and other_layer.bandCount() != layer.bandCount()
                ):
                    found.append(
                        f"'{other_layer.name()}' has {other_layer.bandCount()} bands and "
                        f"'{layer.name()}' has {layer.bandCount()}: they need the same bands."
                    )
            chosen[slot.key] = (slot, layer)
            table = self.tables.get(slot.key)
            if table is not None:
                problem = table.mapping().problem(layer.bandCount())
                if problem:
                    found.append(f"{layer.name()}: {problem}")
        return found + self.weights_problems(spec)

    def warnings(self) -> List[str]:
        """What the user must check before trusting the map (it does not stop a run)."""
        found = []
        for slot in self.mapping_slots():
            table, layer = self.tables.get(slot.key), self.layer_for(slot.key)
            if table is None or layer is None or len(slot.modality.bands) < 2:
                continue
            rows = table.position_rows()
            if rows:
                found.append(
                    f"{layer.name()}: {len(rows)} band(s) matched by position only, because the "
                    "layer's band descriptions do not name them: if its bands are not in the "
                    f"order {', '.join(rows[:4])}{'…' if len(rows) > 4 else ''}, the map is wrong. "
                    "Check the band mapping."
                )
        return found + self.unused_layers() + self.checked

    def set_checked(self, messages: List[str]) -> None:
        """Show what a check of the inputs found, until they change."""
        self.checked = list(messages)
        self.check()

    def unused_layers(self) -> List[str]:
        """Layers picked for slots the chosen model does not take, and a model that takes them."""
        spec = self.current_spec()
        wanted = {slot.key for slot in self.slots()}
        unused = sorted(self.picked_keys() - wanted)
        if spec is None or not unused:
            return []
        names = ", ".join(self._input_name(k) for k in unused)
        fits = self.model_for_inputs()
        self.offered_model = fits.name if fits else ""
        offer = f"; {fits.title} ({fits.name}) uses all the layers picked" if fits else ""
        return [f"{spec.name} does not use {names}{offer}."]

    def _input_name(self, key: str) -> str:
        layer = self.layer_combos[key].currentLayer()
        if layer is not None:
            return f"'{layer.name()}'"
        return f"the band files of {self._slot_labels[key].text()}"

    def check(self, *_args) -> List[str]:
        self.mapping_box.update_title()
        found = self.problems()
        self.problem.setText("<br>".join(html.escape(p) for p in found))
        self.problem.setVisible(bool(found))
        self.offered_model = ""
        checks = self.warnings()
        text = "<br>".join(html.escape(w) for w in checks)
        if self.offered_model:
            text += f" <a href='model:{self.offered_model}'>Use it</a>"
        self.warning.setText(text)
        self.warning.setVisible(bool(checks))
        self.checked_problems.emit(bool(found))
        return found

    def _on_warning_link(self, link: str) -> None:
        """'Use it': choose the model that takes every picked layer."""
        if link.startswith("model:"):
            index = self.model_combo.findData(link.split(":", 1)[1])
            if index >= 0:
                self.model_combo.setCurrentIndex(index)
