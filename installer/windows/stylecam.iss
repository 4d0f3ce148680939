; Inno Setup 6 script for stylecam on Windows: installs the PyInstaller folder built by
; installer\windows\build.ps1 (one folder: stylecam-tray.exe, stylecam.exe, _internal\).
;
;   ISCC.exe /DFlavor=cpu /DSourceDir=C:\...\dist\stylecam /DOutputDir=C:\...\out stylecam.iss
;
; One installer per torch build (Flavor): "cpu" (every PC) and "cu130" (NVIDIA, driver 580 or
; newer; several GB). At install time each checks the machine and says when the other one fits
; it better, so the CUDA build is chosen where a GPU can use it. Model weights are not included:
; the app pulls them into the Hugging Face cache on first use.
;
; Per-user by default (no administrator rights needed); the uninstaller removes the program
; folder, the shortcuts and the sign-in entry. Settings, logs and downloaded models stay.

#ifndef Flavor
  #define Flavor "cpu"
#endif
#ifndef SourceDir
  #define SourceDir "..\..\dist\stylecam"
#endif
#ifndef OutputDir
  #define OutputDir "..\..\dist"
#endif
#define AppVersion "0.1.0"
; HKCR\CLSID\{...} of OBS's DirectShow virtual camera: pyvirtualcam's "obs" backend needs it.
#define ObsVirtualCamClsid "{A3FCE0F5-3493-419F-958A-ABA1250EC20B}"
#define MinCudaDriver 580

[Setup]
AppId={{8D3E2B6A-5C41-4F7E-9A0B-3C2D51E7F4A9}
AppName=stylecam
AppVersion={#AppVersion}
AppVerName=stylecam {#AppVersion} ({#Flavor})
AppPublisher=stylecam
DefaultDirName={autopf}\stylecam
DefaultGroupName=stylecam
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
WizardStyle=modern
OutputDir={#OutputDir}
OutputBaseFilename=stylecam-setup-{#AppVersion}-{#Flavor}
#ifdef IconFile
SetupIconFile={#IconFile}
#endif
UninstallDisplayIcon={app}\stylecam-tray.exe
UninstallDisplayName=stylecam
InfoAfterFile=FIRST-RUN.txt
; torch's libraries are large and already compressed poorly; lzma2 without solid mode keeps the
; compressor's memory bounded. The CUDA build passes 2 GB, the most one setup .exe may hold.
Compression=lzma2/normal
SolidCompression=no
#if Flavor == "cu130"
DiskSpanning=yes
DiskSliceSize=max
#endif
CloseApplications=yes
RestartApplications=no

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "autostart"; Description: "Start stylecam when I sign in"; GroupDescription: "Start-up:"; Flags: unchecked

[Files]
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs
Source: "FIRST-RUN.txt"; DestDir: "{app}"; Flags: ignoreversion

[Icons]
Name: "{autoprograms}\stylecam"; Filename: "{app}\stylecam-tray.exe"; Comment: "Live stylized camera in the system tray"
Name: "{autoprograms}\stylecam - check the set-up"; Filename: "{cmd}"; Parameters: "/k ""{app}\stylecam.exe"" doctor"; WorkingDir: "{app}"
Name: "{autodesktop}\stylecam"; Filename: "{app}\stylecam-tray.exe"; Tasks: desktopicon
Name: "{userstartup}\stylecam"; Filename: "{app}\stylecam-tray.exe"; Tasks: autostart

[Run]
Filename: "https://obsproject.com/download"; Description: "Get OBS Studio: stylecam's virtual camera on Windows is OBS's (not found on this PC)"; Flags: shellexec postinstall skipifsilent nowait; Check: not ObsVirtualCamRegistered
Filename: "{app}\stylecam-tray.exe"; Description: "Start stylecam now"; Flags: nowait postinstall skipifsilent

[UninstallRun]
; A running tray app holds its files open. It has no window to close, so it is ended; its
; settings are saved on every change, so nothing is lost.
Filename: "{sys}\taskkill.exe"; Parameters: "/F /IM stylecam-tray.exe"; Flags: runhidden; RunOnceId: "StopTray"

[Code]
function ObsVirtualCamRegistered: Boolean;
begin
  Result := RegKeyExists(HKEY_CLASSES_ROOT, 'CLSID\{#ObsVirtualCamClsid}');
end;

{ The NVIDIA driver's major version from nvidia-smi (installed with every NVIDIA driver into
  System32), or 0 when there is no NVIDIA driver. }
function NvidiaDriverMajor: Integer;
var
  Smi, OutFile: String;
  Lines: TArrayOfString;
  Code, Dot: Integer;
begin
  Result := 0;
  Smi := ExpandConstant('{sysnative}\nvidia-smi.exe');
  if not FileExists(Smi) then
    Exit;
  OutFile := ExpandConstant('{tmp}\nvidia-smi.txt');
  if Exec(ExpandConstant('{cmd}'), '/c ""' + Smi + '" --query-gpu=driver_version --format=csv,noheader > "' + OutFile + '""',
          '', SW_HIDE, ewWaitUntilTerminated, Code) and (Code = 0)
     and LoadStringsFromFile(OutFile, Lines) and (GetArrayLength(Lines) > 0) then
  begin
    Dot := Pos('.', Lines[0]);
    if Dot > 1 then
      Result := StrToIntDef(Trim(Copy(Lines[0], 1, Dot - 1)), 0);
  end;
end;

function InitializeSetup: Boolean;
var
  Major: Integer;
begin
  Result := True;
  Major := NvidiaDriverMajor;
#if Flavor == "cu130"
  if Major < {#MinCudaDriver} then
    Result := SuppressibleMsgBox(
      'This is the NVIDIA (CUDA 13.0) build of stylecam, but this PC has ' +
      'no NVIDIA driver {#MinCudaDriver} or newer' + #13#10 + '(found: ' + IntToStr(Major) + '; 0 means none).' + #13#10#13#10 +
      'It would run on the processor only. The smaller stylecam-setup-{#AppVersion}-cpu.exe does the same; ' +
      'or update the NVIDIA driver first.' + #13#10#13#10 + 'Install this build anyway?',
      mbConfirmation, MB_YESNO, IDYES) = IDYES;
#else
  if Major >= {#MinCudaDriver} then
    Result := SuppressibleMsgBox(
      'This PC has an NVIDIA GPU (driver ' + IntToStr(Major) + '). The NVIDIA build, ' +
      'stylecam-setup-{#AppVersion}-cu130.exe, runs the diffusion styles on it, many times faster.' + #13#10#13#10 +
      'Install this processor-only build anyway?',
      mbConfirmation, MB_YESNO, IDYES) = IDYES
  else if Major > 0 then
    Log('NVIDIA driver ' + IntToStr(Major) + ' is older than {#MinCudaDriver}: the CPU build fits');
#endif
end;
