"""Plain-Python services: PACS access, imaging, demo data.

Nothing here imports Dash or Flask, so a notebook can do::

    from services.pacs import open_pacs
    pacs = open_pacs(dicom_dir="var/dicom")
    series = pacs.list_series(study_uid)
"""
