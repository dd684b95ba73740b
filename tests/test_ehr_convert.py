"""Extract rows to facts: each table's fields, and each kind of bad row named by column and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_adapter.ehr.columns import ColumnMapError, load_column_map
from fhir_adapter.ehr.convert import RowConverter, RowError
from fhir_adapter.ehr.model import (
    TABLES,
    Diagnosis,
    EdssAssessment,
    LabResult,
    Medication,
    MriExam,
    Patient,
    Relapse,
    StatusFact,
)

EXTRACTED_ON = "2025-01-31"
DEFAULT = load_column_map("default")


def convert(table: str, **cells: str):
    """Convert one row given as {column: text}, in the default format's column order."""
    header = [f.name for f in TABLES[table].fields]
    return RowConverter(table, DEFAULT, header, EXTRACTED_ON).convert([cells.get(name, "") for name in header])


def rejected(table: str, **cells: str) -> RowError:
    with pytest.raises(RowError) as caught:
        convert(table, **cells)
    return caught.value


# --- each table -------------------------------------------------------------------------------------

def test_patient_row_with_sex_alias():
    fact = convert("patients", mrn=" MRN7 ", birth_date="1980-02-29", sex="F")
    assert fact == Patient("MRN7", "1980-02-29", "female")


def test_diagnosis_rows_take_names_aliases_and_codes():
    row = dict(diagnosis_id="D1", mrn="M1", onset_date="2015-03", diagnosis_date="2016-01-10")
    assert convert("diagnoses", diagnosis="RRMS", **row) == Diagnosis("D1", "M1", "rrms", "2015-03", "2016-01-10")
    assert convert("diagnoses", diagnosis="Secondary progressive MS", **row).diagnosis == "spms"
    assert convert("diagnoses", diagnosis="G35.B1", **row).diagnosis == "ppms"          # ICD-10-CM FY2026
    assert convert("diagnoses", diagnosis="G35.10", **row).diagnosis == "rrms"          # ICD-10-GM
    assert convert("diagnoses", diagnosis="G35", **row).diagnosis == "multiple-sclerosis"
    assert convert("diagnoses", diagnosis="Myelodysplastic syndrome", **row).diagnosis == "myelodysplasia"
    ended = convert("diagnoses", diagnosis="malignancy", status="remission", end_date="2020-01-01", **row)
    assert (ended.status, ended.abated) == ("remission", "2020-01-01")


def test_edss_row_with_functional_systems():
    fact = convert("edss", edss_id="E1", mrn="M1", date="2024-06-01", score="4.5", fs_pyramidal="3", fs_visual="0")
    assert fact == EdssAssessment("E1", "M1", "2024-06-01", 4.5, (("kfss-visual", 0), ("kfss-pyramidal", 3)))
    assert convert("edss", edss_id="E2", mrn="M1", date="2024-06-01", score="0").score == 0.0
    assert convert("edss", edss_id="E3", mrn="M1", date="2024-06-01", score="10").score == 10.0


def test_relapse_row():
    assert convert("relapses", relapse_id="R1", mrn="M1", onset_date="2024-12-01", severity="Severe") == Relapse(
        "R1", "M1", "2024-12-01", "severe")
    assert convert("relapses", relapse_id="R2", mrn="M1", onset_date="2024-12-01").severity is None


def test_mri_row_keeps_missing_measures_missing():
    assert convert("mri", mri_id="I1", mrn="M1", date="2024-01-02", gd_lesions="0", t2_volume_ml="3.25") == MriExam(
        "I1", "M1", "2024-01-02", 0, None, 3.25)


def test_lab_rows_convert_units_and_read_qualitative_results():
    row = dict(lab_id="L1", mrn="M1", date="2024-01-02")
    platelets = convert("labs", test="PLT", value="187000", unit="/µL", **row)
    assert (platelets.test, platelets.value, platelets.ucum) == ("platelets", 187.0, "10*9/L")
    assert convert("labs", test="777-3", value="231", unit="10^9/L", **row).test == "platelets"   # LOINC code
    egfr = convert("labs", test="eGFR", value="1.2", unit="mL/s/1.73m2", **row)
    assert (egfr.value, egfr.ucum) == (72.0, "mL/min/{1.73_m2}")
    assert convert("labs", test="HBs Ag", value="neg", **row) == LabResult("L1", "M1", "2024-01-02", "hbsag",
                                                                           result="negative")
    assert convert("labs", test="CSF OCB", value="Positive", **row).result == "positive"


def test_medication_rows_take_brands_and_codes():
    row = dict(medication_id="X1", mrn="M1", start_date="2020-01-01")
    assert convert("medications", drug="Tysabri", route="IV", end_date="2021-01-01", **row) == Medication(
        "X1", "M1", "natalizumab", "2020-01-01", "2021-01-01", "intravenous")
    assert convert("medications", drug="L04AA27", **row).drug == "fingolimod"                # old ATC code
    assert convert("medications", drug="1876366", **row).drug == "ocrelizumab"               # RxNorm
    assert convert("medications", drug="natalizumab", **row).status == "active"


def test_status_row():
    assert convert("status", status_id="S1", mrn="M1", date="2024-10-01", fact="lactation", value="Yes") == StatusFact(
        "S1", "M1", "2024-10-01", "lactation", True)


# --- bad rows: one test per kind, each names the column and the reason --------------------------------

@pytest.mark.parametrize("table, cells, column, reason", [
    # unparseable, impossible, future and ancient dates
    ("edss", dict(edss_id="E", mrn="M", date="03/15/2024", score="3.0"), "date", "is not a date (YYYY-MM-DD)"),
    ("edss", dict(edss_id="E", mrn="M", date="2024-02-30", score="3.0"), "date", "is not a calendar date"),
    ("edss", dict(edss_id="E", mrn="M", date="\u0662\u0660\u0662\u0664-\u0660\u0661-\u0660\u0662", score="3.0"), "date",
     "is not a calendar date"),   # Arabic-Indic digits: not a FHIR date
    ("diagnoses", dict(diagnosis_id="D", mrn="M", diagnosis="rrms", onset_date="\u0662\u0660\u0661\u0665"),
     "onset_date", "is not a date"),   # a partial date too
    ("relapses", dict(relapse_id="R", mrn="M", onset_date="2025-02-01"), "onset_date", "is in the future"),
    ("patients", dict(mrn="M", birth_date="1880-01-01", sex="male"), "birth_date", "before 1900"),
    ("edss", dict(edss_id="E", mrn="M", date="2024-03", score="3.0"), "date", "is not a date"),  # no partial here
    # EDSS off the scale
    ("edss", dict(edss_id="E", mrn="M", date="2024-01-01", score="11"), "score", "EDSS 11 is not on the scale"),
    ("edss", dict(edss_id="E", mrn="M", date="2024-01-01", score="3.3"), "score", "EDSS 3.3 is not on the scale"),
    ("edss", dict(edss_id="E", mrn="M", date="2024-01-01", score="0.5"), "score", "EDSS 0.5 is not on the scale"),
    ("edss", dict(edss_id="E", mrn="M", date="2024-01-01", score="-1"), "score", "EDSS -1 is not on the scale"),
    ("edss", dict(edss_id="E", mrn="M", date="2024-01-01", score="x"), "score", "'x' is not a number"),
    ("edss", dict(edss_id="E", mrn="M", date="2024-01-01", score="3.0", fs_cerebellar="6"), "fs_cerebellar",
     "grade 6 is above 5"),
    # unknown codes
    ("medications", dict(medication_id="X", mrn="M", drug="Aspirin", start_date="2020-01-01"), "drug",
     "unknown drug 'Aspirin'"),
    ("diagnoses", dict(diagnosis_id="D", mrn="M", diagnosis="I10"), "diagnosis", "unknown diagnosis 'I10'"),
    ("labs", dict(lab_id="L", mrn="M", date="2024-01-01", test="ferritin", value="30", unit="ug/L"), "test",
     "unknown lab test 'ferritin'"),
    ("patients", dict(mrn="M", birth_date="1980-01-01", sex="X"), "sex", "unknown sex 'X'"),
    ("status", dict(status_id="S", mrn="M", date="2024-01-01", fact="pregnancy", value="maybe"), "value",
     "'maybe' is not yes or no"),
    # missing values
    ("edss", dict(edss_id="E", date="2024-01-01", score="3.0"), "mrn", "missing mrn"),
    ("edss", dict(mrn="M", date="2024-01-01", score="3.0"), "edss_id", "missing edss id"),
    ("labs", dict(lab_id="L", mrn="M", date="2024-01-01", test="egfr", value="80"), "unit", "missing unit"),
    # counts, units and plausible ranges
    ("mri", dict(mri_id="I", mrn="M", date="2024-01-01", gd_lesions="-2"), "gd_lesions", "'-2' is negative"),
    ("mri", dict(mri_id="I", mrn="M", date="2024-01-01", new_t2_lesions="1.5"), "new_t2_lesions",
     "is not a whole number"),
    ("mri", dict(mri_id="I", mrn="M", date="2024-01-01", t2_volume_ml="-0.5"), "t2_volume_ml", "is negative"),
    ("mri", dict(mri_id="I", mrn="M", date="2024-01-01"), None, "no measure"),
    ("labs", dict(lab_id="L", mrn="M", date="2024-01-01", test="platelets", value="200", unit="mmol/L"), "unit",
     "unit 'mmol/L' is not known for platelets"),
    ("labs", dict(lab_id="L", mrn="M", date="2024-01-01", test="platelets", value="-5", unit="10^9/L"), "value",
     "outside the plausible range"),
    ("labs", dict(lab_id="L", mrn="M", date="2024-01-01", test="hiv", value="12"), "value",
     "is not positive or negative"),
    # contradictions between fields
    ("medications", dict(medication_id="X", mrn="M", drug="fingolimod", start_date="2020-05-01",
                         end_date="2020-04-01"), "end_date", "before the start"),
    ("diagnoses", dict(diagnosis_id="D", mrn="M", diagnosis="rrms", onset_date="2018-05", diagnosis_date="2018-01-02"),
     "onset_date", "after the diagnosis date"),
    ("diagnoses", dict(diagnosis_id="D", mrn="M", diagnosis="malignancy", end_date="2020-01-01"), "end_date",
     "needs status remission, resolved or inactive"),
])
def test_bad_row_names_column_and_reason(table, cells, column, reason):
    error = rejected(table, **cells)
    assert error.column == column
    assert reason in error.reason


def test_row_with_wrong_number_of_cells():
    converter = RowConverter("relapses", DEFAULT, ["relapse_id", "mrn", "onset_date", "severity"], EXTRACTED_ON)
    with pytest.raises(RowError, match="the row has 3 cells, the header 4") as caught:
        converter.convert(["R1", "M1", "2024-01-01"])
    assert caught.value.column is None


def test_header_without_a_required_column_names_the_file_and_the_map():
    with pytest.raises(ColumnMapError, match=r"edss.csv: no column 'score' \(field score\)"):
        RowConverter("edss", DEFAULT, ["edss_id", "mrn", "date"], EXTRACTED_ON)


def test_column_map_alias_to_an_unknown_value_is_refused(tmp_path):
    text = Path(DEFAULT.source).read_text(encoding="utf-8").replace("tysabri: natalizumab", "tysabri: natalisumab")
    broken = tmp_path / "broken.yaml"
    broken.write_text(text, encoding="utf-8")
    header = [f.name for f in TABLES["medications"].fields]
    with pytest.raises(ColumnMapError, match="'natalisumab' is not a known drug"):
        RowConverter("medications", load_column_map(broken), header, EXTRACTED_ON)


def test_other_hospital_map_reads_its_own_conventions():
    cmap = load_column_map("other-hospital")
    edss = RowConverter("edss", cmap, ["UntersuchungNr", "PatNr", "Datum", "EDSS"], EXTRACTED_ON)
    assert edss.convert(["K1", "P1", "02.10.2024", "6,5"]) == EdssAssessment("K1", "P1", "2024-10-02", 6.5)
    with pytest.raises(RowError, match=r"'31.02.2024' is not a date \(DD.MM.YYYY\)"):
        edss.convert(["K1", "P1", "31.02.2024", "6,5"])
    mri = RowConverter("mri", cmap, ["MRTNr", "PatNr", "Datum", "T2_Volumen_mm3"], EXTRACTED_ON)
    assert mri.convert(["I1", "P1", "01.02.2023", "4200"]).t2_volume_ml == 4.2        # scale: mm3 -> mL
    labs = RowConverter("labs", cmap, ["LaborNr", "PatNr", "Datum", "Analyt", "Wert", "Einheit"], EXTRACTED_ON)
    assert labs.convert(["L1", "P1", "01.02.2023", "Thrombozyten", "231", "Gpt/l"]).value == 231.0  # map's unit
    assert labs.convert(["L2", "P1", "01.02.2023", "Leukozyten", "5,4", "/nl"]).value == 5.4
